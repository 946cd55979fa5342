package openapi

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestMerge(t *testing.T) {
	const gen = `{"swagger":"2.0","tags":[{"name":"A"}],"paths":{"/v1/a":{"get":{"responses":{"200":{"description":"ok"}}}}},"definitions":{"A":{"type":"object"}}}`
	tests := []struct {
		name    string
		overlay string
		wantErr string
		check   func(t *testing.T, doc map[string]any)
	}{
		{name: "adds paths, methods, definitions, tags and security; refusals on keyed operations",
			overlay: `{"securityDefinitions":{"k":{"type":"apiKey"}},"security":[{"k":[]}],"responses":{"Unauthorized":{"description":"x"}},` +
				`"tags":[{"name":"B"}],"definitions":{"B":{"type":"object"}},` +
				`"paths":{"/v1/a":{"post":{"responses":{"200":{"description":"ok"},"401":{"description":"own"}}}},"/healthz":{"get":{"security":[],"responses":{"200":{"description":"ok"}}}}}}`,
			check: func(t *testing.T, doc map[string]any) {
				paths := doc["paths"].(map[string]any)
				a := paths["/v1/a"].(map[string]any)
				get := a["get"].(map[string]any)["responses"].(map[string]any)
				if get["401"].(map[string]any)["$ref"] != "#/responses/Unauthorized" || get["429"] == nil || get["403"] == nil {
					t.Errorf("GET /v1/a responses = %v, want 401, 403 and 429 refs", get)
				}
				post := a["post"].(map[string]any)["responses"].(map[string]any)
				if post["401"].(map[string]any)["description"] != "own" {
					t.Errorf("POST /v1/a's own 401 was replaced: %v", post["401"])
				}
				hz := paths["/healthz"].(map[string]any)["get"].(map[string]any)["responses"].(map[string]any)
				if _, ok := hz["401"]; ok {
					t.Errorf("/healthz (security: []) got a 401: %v", hz)
				}
				if len(doc["tags"].([]any)) != 2 || len(doc["definitions"].(map[string]any)) != 2 || doc["securityDefinitions"] == nil {
					t.Errorf("tags, definitions or securityDefinitions not merged: %v", doc)
				}
			}},
		{name: "an operation both define", overlay: `{"paths":{"/v1/a":{"get":{"responses":{"200":{}}}}}}`, wantErr: "get /v1/a"},
		{name: "a definition both define", overlay: `{"definitions":{"A":{}}}`, wantErr: `definitions "A"`},
		{name: "not an operation", overlay: `{"paths":{"/v1/a":{"parameters":[]}}}`, wantErr: "not an operation"},
		{name: "an operation without responses", overlay: `{"paths":{"/v1/b":{"get":{}}}}`, wantErr: "no responses"},
		{name: "bad JSON", overlay: `{"paths":`, wantErr: "overlay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Merge([]byte(gen), []byte(tt.overlay))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Merge: %v, want an error naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc map[string]any
			if err := json.Unmarshal(out, &doc); err != nil {
				t.Fatalf("merged document is not JSON: %v", err)
			}
			tt.check(t, doc)
		})
	}
}

// TestEmbeddedMerges: the committed documents merge (JSON is built at
// init, which would panic otherwise) and the overlay keeps its own
// structure valid JSON.
func TestEmbeddedMerges(t *testing.T) {
	if _, err := Merge(generated, overlay); err != nil {
		t.Fatal(err)
	}
	if !json.Valid(overlay) || !json.Valid(JSON) {
		t.Fatal("the overlay or the merged document is not valid JSON")
	}
}
