"""The equivalence suite: one `.mesh` policy must behave the same in Envoy and in the native
proxy. `policies` generates policies and requests (from callers with a SPIFFE ID over mTLS, or
plaintext ones), `compile` turns a policy into both targets' files, `decisions` is the fast
layer (an evaluator of the Envoy JSON against the native proxy's pure decision functions),
`dataplanes` runs real Envoy and the native proxy in front of the same loopback upstreams, with
the certificates of `identities`, and `tally` counts what was compared for the summary line."""
