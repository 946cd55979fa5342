package emberd

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

func counterValue(t *testing.T) float64 {
	t.Helper()
	var m dto.Metric
	if err := handshakeErrors.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestServerErrorLog(t *testing.T) {
	var buf bytes.Buffer
	l := serverErrorLog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	before := counterValue(t)
	l.Printf("http: TLS handshake error from 127.0.0.1:5555: remote error: tls: bad certificate")
	l.Printf("http: Accept error: too many open files; retrying in 5ms")
	if got := counterValue(t) - before; got != 1 {
		t.Errorf("handshake errors counted: %v, want 1", got)
	}
	out := buf.String()
	if strings.Contains(out, "handshake") {
		t.Errorf("a failed handshake was logged above DEBUG:\n%s", out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "too many open files") {
		t.Errorf("other server errors must stay WARN:\n%s", out)
	}
}
