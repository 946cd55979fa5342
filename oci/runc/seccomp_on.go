//go:build seccomp

package runc

// Built with the seccomp tag: libcontainer applies the workers' seccomp
// profile (needs cgo and libseccomp).
const seccompCompiled = true
