"""The native sidecar proxy (issue: native Python proxy). It reads only its own config format
and never imports the compiler."""
