// Package openapi embeds the OpenAPI v2 (Swagger) description of Ember's REST
// API: the /v1 gateway routes generated from the protos in proto/ember/v1 by
// scripts/proto.sh (ember.swagger.json), merged with the routes emberd serves
// by hand (rest.overlay.json: RunPod's /v2 client and worker API, the OpenAI
// route, keys, GPUs, workers, the image upload, the probes and metrics) and
// the security scheme that applies to all of them.
package openapi

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

//go:embed ember.swagger.json
var generated []byte

//go:embed rest.overlay.json
var overlay []byte

// JSON is the merged OpenAPI v2 document covering every REST route emberd
// serves. Callers must not modify it.
var JSON = mustMerge(generated, overlay)

// refusals are the responses added to every operation that needs an API
// key (it has no security of its own, so the document's apiKey applies)
// and does not describe them itself; the overlay defines them under
// "responses".
var refusals = map[string]string{
	"401": "#/responses/Unauthorized",
	"403": "#/responses/Forbidden",
	"429": "#/responses/TooManyRequests",
}

// methods are the operation keys of a Swagger 2.0 path item.
var methods = []string{"get", "put", "post", "delete", "options", "head", "patch"}

func mustMerge(gen, over []byte) []byte {
	b, err := Merge(gen, over)
	if err != nil {
		// Both inputs are embedded: a bad one is a build error, which
		// the package's tests catch.
		panic(err)
	}
	return b
}

// Merge merges the overlay document into the generated one: its paths,
// definitions and tags are added (a path operation or definition both
// define is an error, so the overlay never hides a generated route), its
// securityDefinitions, security and responses are taken, and every
// operation under the global security gets the 401, 403 and 429 responses
// it does not describe itself.
func Merge(gen, over []byte) ([]byte, error) {
	var g, o map[string]any
	if err := decode(gen, &g); err != nil {
		return nil, fmt.Errorf("generated document: %w", err)
	}
	if err := decode(over, &o); err != nil {
		return nil, fmt.Errorf("overlay: %w", err)
	}
	for _, k := range []string{"securityDefinitions", "security", "responses"} {
		if v, ok := o[k]; ok {
			if _, dup := g[k]; dup {
				return nil, fmt.Errorf("overlay: %q is in the generated document too", k)
			}
			g[k] = v
		}
	}
	if tags, ok := o["tags"].([]any); ok {
		gt, _ := g["tags"].([]any)
		g["tags"] = append(gt, tags...)
	}
	if err := mergeObjects(g, o, "definitions", false); err != nil {
		return nil, err
	}
	if err := mergeObjects(g, o, "paths", true); err != nil {
		return nil, err
	}
	paths, _ := g["paths"].(map[string]any)
	// Generated operations that need no key (the gateway's twin of the
	// gRPC health check) get "security: []": the overlay names them in
	// x-ember-public as "METHOD /path".
	if pub, ok := o["x-ember-public"].([]any); ok {
		for _, v := range pub {
			s, _ := v.(string)
			m, path, ok := strings.Cut(s, " ")
			op, found := map[string]any(nil), false
			if item, isObj := paths[path].(map[string]any); ok && isObj {
				op, found = item[strings.ToLower(m)].(map[string]any)
			}
			if !found {
				return nil, fmt.Errorf("overlay: x-ember-public: %q is not an operation of the generated document", s)
			}
			op["security"] = []any{}
		}
	}
	for path, item := range paths {
		ops, ok := item.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("path %s: not an object", path)
		}
		for _, m := range methods {
			op, ok := ops[m].(map[string]any)
			if !ok {
				continue
			}
			if _, own := op["security"]; own {
				continue
			}
			resps, ok := op["responses"].(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s %s: no responses", m, path)
			}
			for code, ref := range refusals {
				if _, ok := resps[code]; !ok {
					resps[code] = map[string]any{"$ref": ref}
				}
			}
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(g); err != nil {
		return nil, fmt.Errorf("encode the merged document: %w", err)
	}
	return buf.Bytes(), nil
}

// decode is json.Unmarshal keeping numbers as they are written.
func decode(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(v)
}

// mergeObjects adds o[key]'s members to g[key]. With byMethod the members
// are path items, merged operation by operation.
func mergeObjects(g, o map[string]any, key string, byMethod bool) error {
	om, _ := o[key].(map[string]any)
	gm, _ := g[key].(map[string]any)
	if gm == nil {
		gm = map[string]any{}
		g[key] = gm
	}
	for name, v := range om {
		have, dup := gm[name]
		if !dup {
			gm[name] = v
			continue
		}
		if !byMethod {
			return fmt.Errorf("overlay: %s %q is in the generated document too", key, name)
		}
		hm, ok1 := have.(map[string]any)
		vm, ok2 := v.(map[string]any)
		if !ok1 || !ok2 {
			return fmt.Errorf("overlay: path %s: not an object", name)
		}
		for m, op := range vm {
			if _, dup := hm[m]; dup || !slices.Contains(methods, m) {
				return fmt.Errorf("overlay: %s %s is in the generated document too, or not an operation", m, name)
			}
			hm[m] = op
		}
	}
	return nil
}
