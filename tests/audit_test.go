package tests

// The audit trail end to end: every admin action done through a real
// emberd with a named admin key writes one audit line naming that key, the
// action, the object and the outcome, and no key ever reaches the log.

import (
	"bufio"
	"bytes"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// auditLine is one "msg=audit" line of emberd's text log, as key=value
// pairs.
type auditLine map[string]string

// auditLines reads the audit lines from every log emberd wrote in this test.
func auditLines(t *testing.T, d *Daemon) []auditLine {
	t.Helper()
	var out []auditLine
	for _, l := range allLogs(t, d) {
		sc := bufio.NewScanner(strings.NewReader(l))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.Contains(line, " msg=audit ") {
				continue
			}
			out = append(out, parseLogfmt(line))
		}
	}
	return out
}

// parseLogfmt splits a slog text line into its keys and values (values
// quoted when they hold spaces).
func parseLogfmt(line string) auditLine {
	m := auditLine{}
	for len(line) > 0 {
		line = strings.TrimLeft(line, " ")
		k, rest, ok := strings.Cut(line, "=")
		if !ok {
			break
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && (rest[end] != '"' || rest[end-1] == '\\') {
				end++
			}
			v = strings.ReplaceAll(rest[1:min(end, len(rest))], `\"`, `"`)
			rest = rest[min(end+1, len(rest)):]
		} else {
			v, rest, _ = strings.Cut(rest, " ")
		}
		m[k] = v
		line = rest
	}
	return m
}

func TestAuditTrail(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the image actions need the runc runtime, which needs root (CI runs as root)")
	}
	t.Parallel()
	dockerTar, _ := workerImages(t)
	d := StartDaemon(t, "--runtime", "runc")
	opsID, ops := createKey(t, d, map[string]any{"name": "ops", "scope": "admin"})
	secrets := []string{d.Key, ops}
	as := func(method, path string, body any, want int) map[string]any {
		t.Helper()
		saved := d.Key
		d.Key = ops
		defer func() { d.Key = saved }()
		return d.JSON(method, path, body, want)
	}

	// Images: import (a path on this machine), upload, remove.
	as("POST", "/v1/images:import", map[string]any{"path": dockerTar, "name": "ember/audit:1"}, 200)
	tarBytes, err := os.ReadFile(dockerTar)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", d.URL+"/v1/images:upload?name=ember/audit:2", bytes.NewReader(tarBytes))
	req.Header.Set("Authorization", "Bearer "+ops)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d", resp.StatusCode)
	}
	as("DELETE", "/v1/images/ember/audit:2", nil, 200)
	// A failed action is audited too.
	as("DELETE", "/v1/images/ember/nothing:0", nil, 404)

	// Endpoints: create, update, delete; a worker kept up and stopped; a
	// purge on /v2 and on /v1.
	ep := as("POST", "/v1/endpoints", map[string]any{"name": "audited", "image": "ember/audit:1", "gpuCount": 0, "workersMax": 1, "idleTimeout": 30, "memoryMb": 128}, 200)["id"].(string)
	as("PATCH", "/v1/endpoints/"+ep, map[string]any{"workersMin": 1}, 200)
	var worker string
	waitFor(t, 60*time.Second, "a workersMin worker", func() bool {
		for _, w := range d.Workers(ep) {
			if w.State == "idle" || w.State == "running" {
				worker = w.ID
				return true
			}
		}
		return false
	})
	as("PATCH", "/v1/endpoints/"+ep, map[string]any{"workersMin": 0}, 200)
	as("POST", "/v1/workers/"+worker+":stop", nil, 200)
	as("POST", "/v2/"+ep+"/purge-queue", nil, 200)
	as("POST", "/v1/endpoints/"+ep+"/queue:purge", map[string]any{}, 200)
	as("DELETE", "/v1/endpoints/"+ep, nil, 200)

	// Keys: create, revoke; and a rotation of the admin key by ops.
	tmpID, tmp := createKey(t, d, map[string]any{"name": "tmp", "scope": "read"})
	secrets = append(secrets, tmp)
	as("DELETE", "/v1/keys/"+tmpID, nil, 200)
	rot := as("POST", "/v1/keys:rotate-admin", nil, 200)
	newAdmin, _ := rot["key"].(string)
	secrets = append(secrets, newAdmin)
	d.Key = newAdmin

	want := []struct{ action, object, outcome, by string }{
		{"key.create", "", "ok", "admin"}, // ops, made by the bootstrap key
		{"image.import", "ember/audit:1", "ok", opsID},
		{"image.import", "ember/audit:2", "ok", opsID},
		{"image.remove", "ember/audit:2", "ok", opsID},
		{"image.remove", "ember/nothing:0", "error", opsID},
		{"endpoint.create", ep, "ok", opsID},
		{"endpoint.update", ep, "ok", opsID},
		{"endpoint.update", ep, "ok", opsID},
		{"worker.stop", worker, "ok", opsID},
		{"queue.purge", ep, "ok", opsID},
		{"queue.purge", ep, "ok", opsID},
		{"endpoint.delete", ep, "ok", opsID},
		{"key.create", tmpID, "ok", "admin"},
		{"key.revoke", tmpID, "ok", opsID},
		{"key.rotate-admin", "", "ok", opsID},
	}
	lines := auditLines(t, d)
	if len(lines) != len(want) {
		var got []string
		for _, l := range lines {
			got = append(got, l["action"]+" "+l["object"]+" by "+l["key_id"])
		}
		t.Fatalf("%d audit lines, want %d:\n%s", len(lines), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		l := lines[i]
		if l["audit"] != "true" || l["action"] != w.action || l["outcome"] != w.outcome || l["key_id"] != w.by ||
			(w.object != "" && l["object"] != w.object) {
			t.Errorf("audit line %d: %v; want %s on %q, %s, by %s", i, l, w.action, w.object, w.outcome, w.by)
		}
		if w.by == opsID && (l["key_name"] != "ops" || l["key_scope"] != "admin") {
			t.Errorf("audit line %d names key %s %s, want ops admin", i, l["key_name"], l["key_scope"])
		}
		if w.outcome == "error" && l["err"] == "" {
			t.Errorf("audit line %d: a failure without its error: %v", i, l)
		}
	}
	checkLogSecrets(t, d, secrets)
}
