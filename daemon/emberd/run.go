package emberd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/emberhq/ember/daemon/connlimit"
	"github.com/emberhq/ember/daemon/console"
	"github.com/emberhq/ember/daemon/grpcapi"
	"github.com/emberhq/ember/daemon/httpapi"
	"github.com/emberhq/ember/daemon/imagesvc"
	apikeys "github.com/emberhq/ember/daemon/keys"
	"github.com/emberhq/ember/daemon/ratelimit"
	"github.com/emberhq/ember/daemon/templates"
	"github.com/emberhq/ember/daemon/tlsconf"
	emberv1 "github.com/emberhq/ember/proto/ember/v1"
	"github.com/emberhq/ember/proto/openapi"
	"github.com/emberhq/ember/scheduler"
	"github.com/emberhq/ember/scheduler/diskguard"
)

// Run starts the daemon and blocks until ctx ends, then shuts down:
// workers are drained while the worker API is still served, the store is
// closed, and the listeners stop.
//
// The start is a sequence of phases (run's methods below), each
// registering how to undo what it started; Run undoes them in reverse
// order whatever phase it stopped at.
func Run(ctx context.Context, o Options) error {
	d := &run{o: o, log: o.Logger}
	if d.log == nil {
		d.log = slog.Default()
	}
	defer d.undo()
	for _, phase := range []func(context.Context) error{
		d.prepare,    // data dir, descriptors, limits, keys, templates, TLS
		d.listen,     // runtime, listeners, HTTP and gRPC served behind the gate
		d.openSched,  // the store and the scheduler (waits for disk space)
		d.serveAPI,   // the gateway and the handler; the gate opens
		d.background, // debug listener, systemd, reloads, preload
	} {
		if err := phase(ctx); err != nil {
			return err
		}
	}
	return d.wait(ctx)
}

// run is one run of emberd: what the phases of Run build and share.
type run struct {
	o   Options
	log *slog.Logger

	// undos are run last-registered first by undo, as defers would be.
	undos []func()

	// prepare
	started  time.Time
	limiter  *ratelimit.Limiter
	conns    *connlimit.Limiter
	keyFile  string
	keyStore *apikeys.Store
	tmpl     *templates.Store
	tlsMode  string
	certs    *tlsconf.Manager // nil: TLS off

	// listen
	wr                 *workerRuntime
	httpAddr, grpcAddr net.Addr
	lazy               *lazyHandler
	hs, workerSrv      *http.Server
	base               string
	servers            *grpcapi.Servers
	images             *grpcapi.ImageServer
	gs                 *grpc.Server
	gh                 *grpcHealth
	errc               chan error

	// openSched
	sched        *scheduler.Scheduler
	closeSched   func() error
	stopLogSweep func()

	// background
	sd          *sdSession
	stopPreload func()
}

// onUndo registers f to run when Run returns.
func (d *run) onUndo(f func()) { d.undos = append(d.undos, f) }

func (d *run) undo() {
	for i := len(d.undos) - 1; i >= 0; i-- {
		d.undos[i]()
	}
}

// goUntil runs f in a goroutine with a context that ends when stop is
// called or ctx ends; stop cancels it and waits for f to return, and is
// also registered to run when Run returns.
func (d *run) goUntil(ctx context.Context, f func(context.Context)) (stop func()) {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(cctx)
	}()
	stop = func() { cancel(); <-done }
	d.onUndo(stop)
	return stop
}

// prepare checks the options and sets up what every listener needs: the
// data dir, the descriptor limit, rate and connection limits, API keys,
// templates and TLS.
func (d *run) prepare(ctx context.Context) error {
	o, log := d.o, d.log
	if o.MinFreeDiskMB < 0 || o.DiskReserveMB < 0 {
		return fmt.Errorf("--min-free-disk-mb (%d) and --disk-reserve-mb (%d) must not be negative", o.MinFreeDiskMB, o.DiskReserveMB)
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	softFiles, _, err := raiseFileLimit(log)
	if err != nil {
		return err
	}
	maxConns, reserve := connectionLimits(o.MaxConnections, softFiles)
	if uint64(maxConns+reserve) >= softFiles {
		log.Warn("--max-connections plus its reserve reaches the open-files limit: emberd may run out of descriptors before it refuses connections", "max_connections", maxConns, "reserve", reserve, "open_files", softFiles)
	}
	rateLimits, err := ratelimit.Parse(o.RateLimits)
	if err != nil {
		return fmt.Errorf("--%w", err)
	}
	d.limiter = ratelimit.New(rateLimits)
	log.Info("rate limits per key and endpoint", "limits", rateLimits.String())
	d.conns = connlimit.New(maxConns, reserve)
	log.Info("client connections", "max", maxConns, "reserve", reserve)
	d.keyFile = o.APIKeyFile
	if d.keyFile == "" {
		d.keyFile = filepath.Join(o.DataDir, "api.key")
	}
	key, err := LoadOrCreateKey(d.keyFile)
	if err != nil {
		return err
	}
	d.started = time.Now()
	if err := d.prepareTLS(); err != nil {
		return err
	}
	d.keyStore, err = apikeys.Open(filepath.Join(o.DataDir, apikeys.FileName))
	if err != nil {
		return err
	}
	// Operator templates (the built-in ones are compiled in).
	d.tmpl, err = templates.Open(filepath.Join(o.DataDir, templates.FileName))
	if err != nil {
		return err
	}
	// The bootstrap key is the store's too: one lookup for every key, and
	// POST /v1/keys:rotate-admin can replace it in the file and in memory.
	d.keyStore.SetAdmin(key, d.keyFile)
	// Last-use times are written once a minute and when emberd stops.
	d.goUntil(context.WithoutCancel(ctx), func(ctx context.Context) {
		d.keyStore.Run(ctx, func(err error) { log.Warn("API keys: writing last-use times", "err", err) })
	})
	return nil
}

// prepareTLS selects the TLS mode and loads or makes the certificates.
func (d *run) prepareTLS() error {
	o, log := d.o, d.log
	var err error
	d.tlsMode, err = tlsconf.SelectMode(o.TLS, o.TLSCert, o.TLSKey)
	if err != nil {
		return err
	}
	if d.tlsMode != tlsconf.ModeOff {
		d.certs, err = tlsconf.New(tlsconf.Options{Mode: d.tlsMode, CertFile: o.TLSCert, KeyFile: o.TLSKey, Dir: filepath.Join(o.DataDir, "tls"), Logger: log})
		if err != nil {
			return err
		}
	}
	if o.InsecureListen {
		if d.certs == nil {
			log.Warn("--insecure-listen: plain HTTP and gRPC are allowed on addresses other than loopback; API keys and job data cross the network in cleartext (use --tls auto or --tls-cert/--tls-key)")
		} else {
			log.Warn("--insecure-listen is set but has no effect: TLS is on", "tls", d.tlsMode)
		}
	}
	return nil
}

// listen opens the worker runtime and the listeners, and serves HTTP and
// gRPC from here on: while the store waits for disk space, /healthz
// answers, /readyz says why it is not ready, and gRPC health says
// NOT_SERVING.
func (d *run) listen(ctx context.Context) error {
	o, log := d.o, d.log
	var err error
	d.wr, err = newRuntime(ctx, o, log)
	if err != nil {
		return err
	}
	d.onUndo(func() { d.wr.close() })
	// The sockets systemd passed (socket activation), else --listen and
	// --grpc-listen.
	httpLn, grpcLn, err := openListeners(o, log)
	if err != nil {
		return err
	}
	d.onUndo(func() { httpLn.Close() })
	d.onUndo(func() { grpcLn.Close() })
	// Addresses are read from the raw listeners; the wrapped ones count.
	d.httpAddr, d.grpcAddr = httpLn.Addr(), grpcLn.Addr()
	if err := listenPolicy(d.httpAddr, d.grpcAddr, o.Listen, o.GRPCListen, d.certs != nil, o.InsecureListen); err != nil {
		return err
	}
	httpLn, grpcLn = d.conns.HTTPListener(httpLn), d.conns.Listener(grpcLn)

	// The server exists before the scheduler so that workers on network
	// "none" can be served in their namespace from the first start; the
	// handler is set once the scheduler it calls exists.
	d.lazy = &lazyHandler{ready: make(chan struct{}), tls: tlsStatus(d.certs), insecure: o.InsecureListen && d.certs == nil}
	d.hs = d.httpServer()
	d.base = workerBase(d.httpAddr)
	d.grpcServer(ctx)

	d.errc = make(chan error, 4)
	d.workerSrv = d.hs // serves the worker API, also in workers' namespaces
	if d.certs != nil {
		if err := d.serveTLS(httpLn); err != nil {
			return err
		}
	} else {
		go func() { d.errc <- d.hs.Serve(httpLn) }()
	}
	go func() { d.errc <- d.gs.Serve(grpcLn) }()
	d.onUndo(d.gs.Stop)
	return nil
}

// httpServer is the REST server. Timeouts: httpapi's deadlines.go says why
// these, and how the long-polls get longer ones. The worker API served in
// workers' network namespaces (netnsServer) uses this server too; its
// connections are not the limiter's and are ignored by its hooks.
func (d *run) httpServer() *http.Server {
	return &http.Server{
		Handler:           d.conns.Handler(d.lazy, httpapi.ReservedRoute),
		ReadHeaderTimeout: httpapi.ReadHeaderTimeout,
		ReadTimeout:       httpapi.ReadTimeout,
		WriteTimeout:      httpapi.WriteTimeout,
		IdleTimeout:       httpapi.IdleTimeout,
		ConnState:         d.conns.ConnState,
		ConnContext:       d.conns.ConnContext,
		ErrorLog:          serverErrorLog(d.log),
	}
}

// grpcServer builds the gRPC server. It is served from the start, so that
// grpc.health.v1 says NOT_SERVING while the store waits for disk space;
// the ember.v1 calls are held by the gate until the scheduler is open
// (grpchealth.go).
func (d *run) grpcServer(ctx context.Context) {
	o, log := d.o, d.log
	d.servers = &grpcapi.Servers{Log: log}
	grpcOpts := []grpc.ServerOption{
		// Per-method sizes (a job is 10 MiB, as on /run) are checked by
		// SizeInterceptor; the transport refuses anything above the
		// largest of them.
		grpc.MaxRecvMsgSize(grpcapi.MaxRecvMsgSize),
		// Every call is authenticated and authorized by its method's
		// scope (grpcapi's method table, which the /v1 gateway routes
		// share), and carries its caller; then held by the gate until
		// the scheduler is open.
		grpc.ChainUnaryInterceptor(grpcapi.UnaryAuth(d.keyStore.Lookup), grpcapi.RateLimitInterceptor(d.limiter), grpcapi.SizeInterceptor(), d.lazy.unaryGate()),
		grpc.ChainStreamInterceptor(grpcapi.StreamAuth(d.keyStore.Lookup), d.lazy.streamGate()),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: httpapi.IdleTimeout}),
	}
	if d.certs != nil {
		grpcOpts = append(grpcOpts, grpc.Creds(credentials.NewTLS(d.certs.TLSConfig())))
	}
	d.gs = grpc.NewServer(grpcOpts...)
	d.servers.Register(d.gs)
	d.images = &grpcapi.ImageServer{Store: d.wr.images, Log: log, RegistryCertsDir: o.RegistryCertsDir, RegistryAuthFile: o.RegistryAuthFile,
		DiskCheck: func(size int64) error { return d.sched.DiskGuard().Check(diskguard.NewWork, size) }}
	d.images.Register(d.gs)
	// The standard health service (no key, like /healthz) and server
	// reflection (v1 and v1alpha, for grpcurl).
	d.gh = newGRPCHealth(d.lazy.state, log)
	d.gh.register(d.gs)
	reflection.Register(d.gs)
	d.goUntil(ctx, func(ctx context.Context) { d.gh.run(ctx, grpcHealthInterval) })
}

// serveTLS serves REST over TLS, and the worker API in plain HTTP on a
// loopback port of its own (tls.go says why).
func (d *run) serveTLS(httpLn net.Listener) error {
	hs, conns := d.hs, d.conns
	// HTTP/1.1 only, as without TLS: the connection limiter counts,
	// reserves and closes idle connections one request stream each, and
	// the long-polls' deadlines (httpapi's deadlines.go) are per
	// connection.
	hs.TLSConfig = d.certs.TLSConfig()
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.ConnState = func(c net.Conn, st http.ConnState) { conns.ConnState(plainConn(c), st) }
	hs.ConnContext = func(ctx context.Context, c net.Conn) context.Context { return conns.ConnContext(ctx, plainConn(c)) }
	wln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("worker API listener on loopback: %w", err)
	}
	d.onUndo(func() { wln.Close() })
	d.workerSrv = workerServer(d.lazy, hs)
	d.base = workerBase(wln.Addr())
	go func() { d.errc <- d.workerSrv.Serve(wln) }()
	go func() { d.errc <- hs.ServeTLS(httpLn, "", "") }()
	return nil
}

// openSched opens the store and the scheduler (waiting for disk space if
// need be), and starts what follows the scheduler: the sweeps of leftover
// containers and old logs, and the GPU health watch.
func (d *run) openSched(ctx context.Context) error {
	o, log, wr := d.o, d.log, d.wr
	sched, err := openScheduler(ctx, d.lazy, log, scheduler.Config{
		ServeInNetns:     netnsServer(d.workerSrv, strings.TrimPrefix(d.base, "http://")),
		DataDir:          o.DataDir,
		Runtime:          wr.rt,
		Adopt:            wr.adopt,
		AllocateGPUs:     wr.images != nil,
		RequireImage:     wr.images != nil,
		ImageExists:      wr.imageExists(),
		AbsoluteCommand:  wr.images == nil,
		GPUs:             wr.gpus,
		GPUFreeMemory:    wr.freeMemory,
		GPUPark:          wr.gpuPark,
		WorkerAPIBase:    d.base,
		Tunables:         o.Tunables,
		MinFreeBytes:     uint64(o.MinFreeDiskMB) << 20,
		DiskReserveBytes: uint64(o.DiskReserveMB) << 20,
		Logger:           log,
	})
	if err != nil {
		return err
	}
	d.sched = sched
	d.closeSched = sync.OnceValue(sched.Close)
	d.onUndo(func() { d.closeSched() })
	wr.sweep()
	d.stopLogSweep = startLogSweeper(filepath.Join(o.DataDir, "workers"), func(id string) bool { _, live := sched.WorkerLog(id); return live })
	d.onUndo(d.stopLogSweep)
	if wr.watchGPUs != nil {
		d.goUntil(ctx, func(ctx context.Context) { wr.watchGPUs(ctx, sched.MarkGPUUnhealthy) })
	}
	return nil
}

// serveAPI hands the scheduler to the gRPC services and the REST handler,
// and opens the gate that held their calls.
func (d *run) serveAPI(ctx context.Context) error {
	sched, wr := d.sched, d.wr
	d.servers.S = sched
	if wr.images != nil {
		d.images.InUse = imagesvc.EndpointsUsingImage(sched, wr.images)
	}
	gw := runtime.NewServeMux(runtime.WithErrorHandler(grpcapi.GatewayErrorHandler), runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{EmitUnpopulated: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}))
	// The gateway calls the servers in-process (no loopback gRPC hop); auth
	// for /v1 is done by httpapi before the gateway sees the request.
	if err := errors.Join(
		emberv1.RegisterEndpointServiceHandlerServer(ctx, gw, d.servers),
		emberv1.RegisterJobServiceHandlerServer(ctx, gw, d.servers),
		emberv1.RegisterHealthServiceHandlerServer(ctx, gw, d.servers),
		d.images.RegisterGateway(ctx, gw),
	); err != nil {
		return fmt.Errorf("register gateway: %w", err)
	}
	handler := httpapi.New(httpapi.Config{Scheduler: sched, KeyStore: d.keyStore, Gateway: gw, OpenAPI: openapi.JSON,
		Logger: d.log, Images: wr.images, GPUStats: wr.gpuStats, Started: d.started, Ready: d.lazy.readiness,
		Connections:    func() any { return d.conns.Stats() },
		RateLimiter:    d.limiter,
		Console:        console.Assets,
		Templates:      d.tmpl,
		TLS:            tlsStatus(d.certs),
		InsecureListen: d.o.InsecureListen && d.certs == nil,
		Metrics:        []prometheus.Collector{newDaemonCollector(sched, wr.gpuStats), handshakeErrors, newBuildInfo(d.o.Version)}})
	d.lazy.disk = sched.DiskGuard().Ready
	d.lazy.set(handler)
	d.gh.update()
	return nil
}

// background starts what runs beside the API once it is served: the debug
// listener, systemd's notifications, reloads, TLS renewal, the return of
// memory at rest, and preload.
func (d *run) background(ctx context.Context) error {
	o, log := d.o, d.log
	if o.DebugListen != "" {
		dl, err := net.Listen("tcp", o.DebugListen)
		if err != nil {
			return fmt.Errorf("--debug-listen %s: %w", o.DebugListen, err)
		}
		dm := pprofMux()
		dm.HandleFunc("POST /debug/wedge", wedgeHandler(d.sched, log))
		ds := &http.Server{Handler: dm, ReadHeaderTimeout: 10 * time.Second}
		go ds.Serve(dl)
		d.onUndo(func() { ds.Close() })
	}
	log.Info("emberd ready", "listen", d.httpAddr.String(), "grpc", d.grpcAddr.String(), "tls", d.tlsMode, "worker_api", d.base, "data_dir", o.DataDir, "runtime", d.wr.rt.Name(), "api_key_file", d.keyFile)
	if o.Ready != nil {
		o.Ready(d.httpAddr.String(), d.grpcAddr.String())
	}
	// READY=1, STATUS= and watchdog pings when run by systemd.
	d.sd = startSystemd(log, d.sched)
	d.goUntil(ctx, func(ctx context.Context) { applyReloads(ctx, o, d.sched, d.certs, d.limiter, log) })
	d.onUndo(runTLS(ctx, d.certs))
	d.goUntil(ctx, func(ctx context.Context) { returnAtRest(ctx, log) })

	// Preload runs after READY: image archives can be many gigabytes, and
	// the API is usable meanwhile.
	preloadDir := o.PreloadDir
	if preloadDir == "" {
		preloadDir = filepath.Join(o.DataDir, "preload")
	}
	d.stopPreload = d.goUntil(ctx, func(ctx context.Context) {
		res, err := preload(ctx, preloadDir, o.DataDir, d.wr.images, d.sched, d.tmpl, log)
		if err != nil && ctx.Err() == nil {
			log.Error("preload failed", "dir", preloadDir, "err", err)
			return
		}
		if res != (preloadResult{}) {
			log.Info("preload done", "dir", preloadDir, "images", res.Images, "templates", res.Templates, "endpoints", res.Endpoints, "already_done", res.Skipped, "failed", res.Failed)
		}
	})
	return nil
}

// wait serves until ctx ends or a listener fails, then drains: systemd is
// told STOPPING=1, the API refuses new work, preload stops, the workers
// drain while the worker API is still served, the store closes, and the
// servers stop.
func (d *run) wait(ctx context.Context) error {
	log := d.log
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-d.errc:
		runErr = fmt.Errorf("listener failed: %w", err)
	}
	// STOPPING=1 first, then the drain below.
	d.sd.stopping("draining workers")
	d.lazy.stopping.Store(true)
	d.gh.shutdown()
	d.stopPreload()
	log.Info("emberd stopping: draining workers")
	d.stopLogSweep()
	if err := d.closeSched(); err != nil {
		log.Error("close scheduler", "err", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.hs.Shutdown(sctx); err != nil {
		d.hs.Close()
	}
	if d.workerSrv != d.hs {
		if err := d.workerSrv.Shutdown(sctx); err != nil {
			d.workerSrv.Close()
		}
	}
	d.gs.Stop()
	log.Info("emberd stopped")
	return runErr
}
