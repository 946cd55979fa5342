package image

import (
	"fmt"
	"regexp"
	"strings"
)

// Reference grammar, a subset of distribution/reference's: enough to accept
// what `docker save`, skopeo and buildkit write and to refuse anything that
// could be confused with a path or an option.
var (
	domainRE    = regexp.MustCompile(`^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?$`)
	componentRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	hexRE       = regexp.MustCompile(`^[a-f0-9]+$`)
)

// maxNameLen bounds a repository name, as registries do.
const maxNameLen = 255

// NormalizeRef returns the canonical form of an image reference, the form
// the store keys names by: Docker Hub's implicit parts are dropped
// ("docker.io/library/ubuntu" -> "ubuntu") and a missing tag becomes
// "latest", so that "ubuntu", "ubuntu:latest" and
// "docker.io/library/ubuntu:latest" all name the same image. A digest, if
// given, is kept ("name@sha256:...", no implicit tag). Callers that compare
// a worker's image with the names handed to Remove's inUse should normalize
// the worker's reference with this function first.
func NormalizeRef(ref string) (string, error) {
	name, tag, digest, err := parseRef(ref)
	if err != nil {
		return "", err
	}
	switch {
	case digest != "" && tag != "":
		return name + ":" + tag + "@" + digest, nil
	case digest != "":
		return name + "@" + digest, nil
	case tag == "":
		tag = "latest"
	}
	return name + ":" + tag, nil
}

// parseRef splits ref into a canonical repository name, a tag and a digest
// (either may be empty), refusing references that do not follow the grammar.
func parseRef(ref string) (name, tag, digest string, err error) {
	if ref == "" {
		return "", "", "", fmt.Errorf("empty image reference")
	}
	name = ref
	if i := strings.IndexByte(name, '@'); i >= 0 {
		name, digest = name[:i], name[i+1:]
		if _, err := parseDigest(digest); err != nil {
			return "", "", "", fmt.Errorf("image reference %q: %w", ref, err)
		}
	}
	if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
		name, tag = name[:i], name[i+1:]
		if !tagRE.MatchString(tag) {
			return "", "", "", fmt.Errorf("image reference %q: invalid tag %q", ref, tag)
		}
	}
	name, err = canonicalName(name)
	if err != nil {
		return "", "", "", fmt.Errorf("image reference %q: %w", ref, err)
	}
	return name, tag, digest, nil
}

// canonicalName validates a repository name and strips Docker Hub's
// implicit domain and "library/" namespace.
func canonicalName(name string) (string, error) {
	if name == "" || len(name) > maxNameLen {
		return "", fmt.Errorf("repository name must be 1 to %d characters", maxNameLen)
	}
	parts := strings.Split(name, "/")
	domain := ""
	if len(parts) > 1 && looksLikeDomain(parts[0]) {
		domain, parts = parts[0], parts[1:]
		if !domainRE.MatchString(domain) {
			return "", fmt.Errorf("invalid registry domain %q", domain)
		}
	}
	for _, p := range parts {
		if !componentRE.MatchString(p) {
			return "", fmt.Errorf("invalid repository name component %q (lowercase letters, digits and . _ - only)", p)
		}
	}
	if domain == "docker.io" || domain == "index.docker.io" {
		domain = ""
	}
	if domain == "" && len(parts) == 2 && parts[0] == "library" {
		parts = parts[1:]
	}
	if domain != "" {
		parts = append([]string{domain}, parts...)
	}
	return strings.Join(parts, "/"), nil
}

// looksLikeDomain applies Docker's rule for telling a registry host from
// the first path component of a repository.
func looksLikeDomain(s string) bool {
	return strings.ContainsAny(s, ".:") || s == "localhost" || strings.ToLower(s) != s
}

// idPrefix returns the hexadecimal part of ref when ref can name an image by
// its ID or digest: "sha256:<hex>" or a bare hex prefix of at least 12
// characters, as `docker images` shows them.
func idPrefix(ref string) (string, bool) {
	hex := strings.TrimPrefix(ref, "sha256:")
	if len(hex) < 12 || len(hex) > 64 || !hexRE.MatchString(hex) {
		return "", false
	}
	return hex, true
}
