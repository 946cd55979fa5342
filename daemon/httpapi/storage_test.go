package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/emberhq/ember/scheduler"
)

// A full disk is 507 with the free and needed bytes, on the RunPod routes
// and on the OpenAI route alike.
func TestInsufficientStorageBody(t *testing.T) {
	err := fmt.Errorf("persist job: %w", &scheduler.InsufficientStorageError{Dir: "/data", Free: 5, Needed: 9, What: "accept new work"})
	for name, write := range map[string]func(http.ResponseWriter, error){"runpod": writeSchedErr, "openai": writeOpenAISchedErr} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			write(rec, err)
			if rec.Code != http.StatusInsufficientStorage {
				t.Fatalf("status %d, want 507", rec.Code)
			}
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if obj, ok := body["error"].(map[string]any); ok {
				body = obj // OpenAI's {"error":{...}}
			}
			if body["freeBytes"] != float64(5) || body["neededBytes"] != float64(9) {
				t.Fatalf("body does not name the bytes: %s", rec.Body)
			}
		})
	}
}
