package tests

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestTemplatesQuickDeploy: a template preloaded from the preload folder
// (the example worker, as the built-in basic but with the process
// runtime's command) is listed after the built-ins; a deploy without its
// required variable is refused naming it and its description; a deploy
// creates an endpoint (the same JSON as GET /v1/endpoints/{id}, the
// template recorded, audited) that runs a job; a read key lists but cannot
// deploy; the CLI deploys too; and templates and the endpoints' record of
// them survive a restart.
func TestTemplatesQuickDeploy(t *testing.T) {
	dir := t.TempDir()
	def := map[string]any{
		"name": "hello-worker", "category": "handler", "description": "the example worker on the host",
		"image": "ember/example-worker:latest", "command": []string{workerBin},
		"env": []map[string]any{
			{"name": "GREETING", "required": true, "description": "what the worker is told to say"},
			{"name": "LOG_STYLE", "default": "plain", "description": "how it logs"},
		},
		"gpuCount": 0, "workersMax": 2, "idleTimeout": 30,
	}
	b, _ := json.Marshal(def)
	if err := os.WriteFile(filepath.Join(dir, "hello.template.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	d := StartDaemon(t, "--preload-dir", dir)

	waitFor(t, 30*time.Second, "preloaded template", func() bool {
		code, _ := d.Do("GET", "/v1/templates/hello-worker", nil)
		return code == 200
	})
	list := d.JSON("GET", "/v1/templates", nil, 200)
	var names []string
	for _, x := range list["templates"].([]any) {
		names = append(names, x.(map[string]any)["name"].(string))
	}
	if got := strings.Join(names, " "); got != "basic vllm text-embeddings hello-worker" {
		t.Fatalf("templates listed: %s", got)
	}

	// A read key sees the catalog but cannot deploy.
	rk := d.JSON("POST", "/v1/keys", map[string]any{"name": "viewer", "scope": "read"}, 200)
	readKey := rk["key"].(string)
	if code, out := d.DoKey("GET", "/v1/templates/hello-worker", nil, readKey); code != 200 {
		t.Errorf("read key GET template: %d %s", code, out)
	}
	if code, out := d.DoKey("POST", "/v1/templates/hello-worker:deploy", map[string]any{"name": "nope"}, readKey); code != 403 || !strings.Contains(string(out), `"neededScope":"admin"`) {
		t.Errorf("read key deploy: %d %s", code, out)
	}

	code, out := d.Do("POST", "/v1/templates/hello-worker:deploy", map[string]any{"name": "hello"})
	if code != 400 || !strings.Contains(string(out), `"env.GREETING: required: what the worker is told to say"`) || !strings.Contains(string(out), `"field":"env.GREETING"`) {
		t.Fatalf("deploy without GREETING: %d %s", code, out)
	}

	ep := d.JSON("POST", "/v1/templates/hello-worker:deploy", map[string]any{"name": "hello", "env": map[string]string{"GREETING": "hi"}, "workersMax": 1}, 200)
	id, _ := ep["id"].(string)
	got := d.JSON("GET", "/v1/endpoints/"+id, nil, 200)
	if !reflect.DeepEqual(ep, got) {
		t.Errorf("the deploy's answer differs from GET /v1/endpoints/%s:\n%v\n%v", id, ep, got)
	}
	env, _ := got["env"].(map[string]any)
	if got["template"] != "hello-worker" || got["templateVersion"] != 1.0 || got["workersMax"] != 1.0 || got["idleTimeout"] != 30.0 ||
		env["GREETING"] != "hi" || env["LOG_STYLE"] != "plain" {
		t.Errorf("deployed endpoint: %v", got)
	}
	res := d.JSON("POST", "/v2/"+id+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": "from a template"}}, 200)
	if res["status"] != "COMPLETED" || res["output"] != "from a template" {
		t.Fatalf("job on the deployed endpoint: %v", res)
	}

	// The CLI: the catalog, and a deploy missing a variable names it.
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(emberBin, args...)
		cmd.Env = append(os.Environ(), "EMBER_ADDR="+d.URL, "EMBER_API_KEY="+d.Key)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := cli("template", "list"); err != nil || !strings.Contains(out, "hello-worker") || !strings.Contains(out, "GREETING") {
		t.Errorf("ember template list: %v\n%s", err, out)
	}
	if out, err := cli("template", "deploy", "hello-worker", "--name", "hello2"); err == nil || !strings.Contains(out, "env.GREETING: required: what the worker is told to say") || !strings.Contains(out, "--env GREETING=VALUE") {
		t.Errorf("ember template deploy without GREETING: %v\n%s", err, out)
	}
	if out, err := cli("template", "deploy", "hello-worker", "--name", "hello2", "--env", "GREETING=yo", "--json"); err != nil || !strings.Contains(out, `"template": "hello-worker"`) {
		t.Errorf("ember template deploy: %v\n%s", err, out)
	}

	// Changes through the API, kept across a restart.
	d.JSON("POST", "/v1/templates", map[string]any{"name": "mine", "image": "x:1", "command": []string{workerBin}}, 200)
	up := d.JSON("PATCH", "/v1/templates/mine", map[string]any{"image": "x:2", "command": []string{workerBin}, "workersMax": 3}, 200)
	if up["version"] != 2.0 {
		t.Errorf("update: %v", up)
	}
	d.JSON("DELETE", "/v1/templates/basic", nil, 409)

	var audited []string
	for _, l := range auditLines(t, d) {
		audited = append(audited, l["action"]+" "+l["object"]+" "+l["template"])
	}
	for _, want := range []string{"template.create hello-worker ", "endpoint.create " + id + " hello-worker", "template.create mine ", "template.update mine "} {
		if !strings.Contains(strings.Join(audited, "\n")+"\n", want+"\n") {
			t.Errorf("no audit line %q in:\n%s", want, strings.Join(audited, "\n"))
		}
	}

	d.Stop()
	d.Restart()
	waitFor(t, 30*time.Second, "restart", func() bool {
		code, _ := d.Do("GET", "/v1/templates/mine", nil)
		return code == 200
	})
	if m := d.JSON("GET", "/v1/templates/mine", nil, 200); m["version"] != 2.0 || m["image"] != "x:2" {
		t.Errorf("after restart: %v", m)
	}
	if e := d.JSON("GET", "/v1/endpoints/"+id, nil, 200); e["template"] != "hello-worker" || e["templateVersion"] != 1.0 {
		t.Errorf("endpoint after restart: %v", e)
	}
	if fi, err := os.Stat(filepath.Join(d.DataDir, "templates.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("templates.json: %v %v", fi, err)
	}
}

// TestTemplateDeployBasicImage: with the runc runtime, deploying the
// built-in basic template before its image is imported is refused with
// the way to import it; done as the message says (ember image load -i
// FILE), the deploy creates an endpoint whose container worker runs a job.
func TestTemplateDeployBasicImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("container workers need root (CI runs as root)")
	}
	dockerTar, _ := workerImages(t)
	d := StartDaemon(t, "--runtime", "runc")

	code, out := d.Do("POST", "/v1/templates/basic:deploy", map[string]any{"name": "hello"})
	want := `{"error":"image ember/example-worker:latest is not in this machine's image store; load it with: ember image load -i FILE (or ember image pull ember/example-worker:latest)","field":"image"}`
	if code != 409 || string(out) != want {
		t.Fatalf("deploy before the image is loaded: %d %s\nwant 409 %s", code, out, want)
	}
	load := exec.Command(emberBin, "image", "load", "-i", dockerTar)
	load.Env = append(os.Environ(), "EMBER_ADDR="+d.URL, "EMBER_API_KEY="+d.Key)
	if b, err := load.CombinedOutput(); err != nil {
		t.Fatalf("ember image load -i: %v\n%s", err, b)
	}
	ep := d.JSON("POST", "/v1/templates/basic:deploy", map[string]any{"name": "hello"}, 200)
	id, _ := ep["id"].(string)
	if ep["image"] != "ember/example-worker:latest" || ep["gpuCount"] != 0.0 || ep["workersMax"] != 2.0 || ep["idleTimeout"] != 30.0 || ep["template"] != "basic" {
		t.Errorf("endpoint deployed from basic: %v", ep)
	}
	res := d.JSON("POST", "/v2/"+id+"/runsync?wait=60000", map[string]any{"input": map[string]any{"output": "quick"}}, 200)
	if res["status"] != "COMPLETED" || res["output"] != "quick" {
		t.Fatalf("job on the basic endpoint: %v\n%s", res, d.Log())
	}
}
