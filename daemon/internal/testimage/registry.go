package testimage

import (
	"net/http"
	"strings"
)

// Registry serves the image as a minimal registry v2 (anonymous, no
// index): repo's manifest under tag and under its digest, and its blobs.
// Anything else is a 404 with a registry error body.
func (b *Built) Registry(repo, tag string) http.Handler {
	blobs := map[string][]byte{b.ConfigDigest: b.Config, b.LayerDigest: b.Layer}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		notFound := func(code string) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"errors":[{"code":"` + code + `","message":"not found"}]}`))
		}
		rest, ok := strings.CutPrefix(r.URL.Path, "/v2/"+repo+"/")
		if r.Method != http.MethodGet || !ok {
			notFound("NAME_UNKNOWN")
			return
		}
		if ref, ok := strings.CutPrefix(rest, "manifests/"); ok {
			if ref != tag && ref != b.ManifestDigest {
				notFound("MANIFEST_UNKNOWN")
				return
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", b.ManifestDigest)
			w.Write(b.Manifest)
			return
		}
		if d, ok := strings.CutPrefix(rest, "blobs/"); ok && blobs[d] != nil {
			w.Write(blobs[d])
			return
		}
		notFound("BLOB_UNKNOWN")
	})
}
