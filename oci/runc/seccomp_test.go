//go:build seccomp

package runc

import (
	"strings"
	"testing"
	"time"
)

// With the seccomp tag, workers run under the default profile: namespace
// creation, mount and keyctl fail with EPERM from seccomp itself
// (unshare(CLONE_NEWUSER) in a multithreaded process would otherwise fail
// with EINVAL, and clone(CLONE_NEWUSER) and keyctl would succeed).
func TestSeccompDeniesNamespacesAndMount(t *testing.T) {
	e := newTestRuntime(t, nil)
	st, log := e.run(t, e.spec("syscalls"), 10*time.Second)
	if st.Code != 0 {
		t.Fatalf("%s\n%s", st, log)
	}
	for _, want := range []string{
		"Seccomp: 2",
		"NoNewPrivs: 1",
		"unshare-user=EPERM",
		"unshare-ns=EPERM",
		"clone-user=EPERM",
		"mount=EPERM",
		"keyctl=EPERM",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}
