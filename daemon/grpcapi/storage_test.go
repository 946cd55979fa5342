package grpcapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/emberhq/ember/scheduler"
)

func TestStorageErrors(t *testing.T) {
	se := &scheduler.InsufficientStorageError{Dir: "/data", Free: 1 << 20, Needed: 64 << 20, What: "accept new work"}
	tests := []struct {
		name     string
		err      error
		code     codes.Code
		httpCode int
	}{
		{"full disk", fmt.Errorf("persist job: %w", se), codes.ResourceExhausted, http.StatusInsufficientStorage},
		{"other resource exhausted", status.Error(codes.ResourceExhausted, "too many"), codes.ResourceExhausted, http.StatusTooManyRequests},
		{"unavailable", fmt.Errorf("%w: closing", scheduler.ErrUnavailable), codes.Unavailable, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.err
			if _, ok := status.FromError(err); !ok || errors.Is(err, scheduler.ErrInsufficientStorage) || errors.Is(err, scheduler.ErrUnavailable) {
				err = toStatus(err)
			}
			if got := status.Code(err); got != tt.code {
				t.Fatalf("code %v, want %v", got, tt.code)
			}
			rec := httptest.NewRecorder()
			mux := runtime.NewServeMux()
			GatewayErrorHandler(context.Background(), mux, &runtime.JSONPb{}, rec, httptest.NewRequest("POST", "/v1/endpoints", nil), err)
			if rec.Code != tt.httpCode {
				t.Fatalf("HTTP %d, want %d: %s", rec.Code, tt.httpCode, rec.Body)
			}
			if tt.httpCode != http.StatusInsufficientStorage {
				return
			}
			var body struct {
				Message string
				Details []struct {
					Reason   string
					Metadata map[string]string
				}
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if len(body.Details) != 1 || body.Details[0].Metadata["freeBytes"] != "1048576" || body.Details[0].Metadata["neededBytes"] != "67108864" {
				t.Fatalf("507 body does not name the bytes: %s", rec.Body)
			}
		})
	}
}
