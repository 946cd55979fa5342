//go:build !seccomp

package runc

// Built without the seccomp tag: libcontainer cannot apply a seccomp
// profile, so the runtime drops it from the spec (and New warns). Release
// builds use -tags seccomp.
const seccompCompiled = false
