// Package openapi embeds the OpenAPI v2 (Swagger) description of Ember's REST
// API, generated from the protos in proto/ember/v1 by scripts/proto.sh.
package openapi

import _ "embed"

// JSON is the merged OpenAPI v2 document (ember.swagger.json) covering every
// service exposed through the REST gateway. Callers must not modify it.
//
//go:embed ember.swagger.json
var JSON []byte
