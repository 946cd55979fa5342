package emberd

import (
	"context"
	"log/slog"
	"strconv"

	"github.com/emberhq/ember/daemon/ratelimit"
	"github.com/emberhq/ember/daemon/tlsconf"
	"github.com/emberhq/ember/scheduler"
)

// restartOnly names the settings that take effect only at the next start,
// with how to read each from Options.
var restartOnly = []struct {
	flag string
	get  func(Options) string
}{
	{"data-dir", func(o Options) string { return o.DataDir }},
	{"listen", func(o Options) string { return o.Listen }},
	{"grpc-listen", func(o Options) string { return o.GRPCListen }},
	{"runtime", func(o Options) string { return o.Runtime }},
	{"worker-init", func(o Options) string { return o.WorkerInit }},
	{"api-key-file", func(o Options) string { return o.APIKeyFile }},
	{"debug-listen", func(o Options) string { return o.DebugListen }},
	{"preload-dir", func(o Options) string { return o.PreloadDir }},
	{"registry-certs-dir", func(o Options) string { return o.RegistryCertsDir }},
	{"registry-auth-file", func(o Options) string { return o.RegistryAuthFile }},
	{"max-connections", func(o Options) string { return strconv.Itoa(o.MaxConnections) }},
	{"tls", func(o Options) string { return o.TLS }},
	{"tls-cert", func(o Options) string { return o.TLSCert }},
	{"tls-key", func(o Options) string { return o.TLSKey }},
	{"insecure-listen", func(o Options) string { return strconv.FormatBool(o.InsecureListen) }},
}

// applyReloads applies each new set of settings from o.Reloads until ctx
// ends: the tunables and the rate limits at once, and a warning for every
// changed setting that needs a restart. Each reload also re-reads the TLS
// certificate files (--tls-cert, --tls-key; certs is nil when TLS is off):
// a new pair is served from the next handshake, a bad one is refused and
// logged.
func applyReloads(ctx context.Context, o Options, sched *scheduler.Scheduler, certs *tlsconf.Manager, limiter *ratelimit.Limiter, log *slog.Logger) {
	cur := o
	for {
		var n Options
		select {
		case <-ctx.Done():
			return
		case n = <-o.Reloads:
		}
		if certs != nil {
			certs.Reload() // logs the outcome
		}
		if n.Tunables != cur.Tunables {
			sched.SetTunables(n.Tunables)
			log.Info("reloaded: scheduler settings applied", n.Tunables.LogArgs()...)
		}
		if n.RateLimits != cur.RateLimits {
			// main checked the value before sending it.
			if l, err := ratelimit.Parse(n.RateLimits); err != nil {
				log.Error("reload: rate-limits refused, the running ones stay", "err", err)
				n.RateLimits = cur.RateLimits
			} else {
				limiter.SetLimits(l)
				log.Info("reloaded: rate limits applied", "limits", l.String())
			}
		}
		for _, r := range restartOnly {
			if r.get(n) != r.get(cur) {
				log.Warn("reloaded: this setting changed but takes effect only at the next restart", "setting", r.flag, "running", r.get(cur), "new", r.get(n))
			}
		}
		// What needs a restart stays as it runs, so it is reported again
		// at each reload until then.
		n.DataDir, n.Listen, n.GRPCListen, n.Runtime, n.WorkerInit, n.APIKeyFile, n.DebugListen, n.PreloadDir, n.MaxConnections =
			cur.DataDir, cur.Listen, cur.GRPCListen, cur.Runtime, cur.WorkerInit, cur.APIKeyFile, cur.DebugListen, cur.PreloadDir, cur.MaxConnections
		n.TLS, n.TLSCert, n.TLSKey, n.InsecureListen = cur.TLS, cur.TLSCert, cur.TLSKey, cur.InsecureListen
		n.RegistryCertsDir, n.RegistryAuthFile = cur.RegistryCertsDir, cur.RegistryAuthFile
		cur = n
	}
}
