//go:build !seccomp

package runc

import (
	"strings"
	"testing"
	"time"
)

// Without the seccomp tag the runtime drops the profile (libcontainer could
// not apply it) and workers still start; what stands between them and
// namespaces then is only their capability set. This shows what the
// seccomp build adds (see seccomp_test.go).
func TestWithoutSeccompTag(t *testing.T) {
	if SeccompEnabled() {
		t.Fatal("SeccompEnabled without the seccomp tag")
	}
	e := newTestRuntime(t, nil)
	st, log := e.run(t, e.spec("syscalls"), 10*time.Second)
	if st.Code != 0 {
		t.Fatalf("%s\n%s", st, log)
	}
	for _, want := range []string{
		"Seccomp: 0",
		"NoNewPrivs: 1",
		"unshare-ns=EPERM", // no CAP_SYS_ADMIN
		"mount=EPERM",      // no CAP_SYS_ADMIN
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	t.Logf("without seccomp:\n%s", log)
}
