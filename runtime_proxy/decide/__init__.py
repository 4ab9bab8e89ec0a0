"""Pure decisions of the proxy: compiled tables and the functions that decide a request, without I/O."""
