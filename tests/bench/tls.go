package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

var tlsN = flag.Int("tls-requests", 1000, "requests per client kind for the TLS figures (split over 5 interleaved rounds)")

// tlsPart prints what TLS costs on /runsync: two emberds run side by side
// the same way, one plain and one with --tls auto, each with warm example
// workers; the same /runsync is timed over plain HTTP and over HTTPS with
// keep-alive (the per-request cost: record encryption), and with a new
// connection per request (plus TCP and the TLS handshake), in interleaved
// rounds so that drift on a shared machine hits every kind alike. The bare
// handshake (TCP connect + TLS 1.3, ECDSA P-256) is timed apart from HTTP.
func tlsPart(tmp string) error {
	plain, err := startEmberd(filepath.Join(tmp, "plain"), "process")
	if err != nil {
		return err
	}
	defer plain.stop()
	secure, err := startEmberd(filepath.Join(tmp, "tls"), "process", "--tls", "auto")
	if err != nil {
		return err
	}
	defer secure.stop()
	caPEM, err := os.ReadFile(filepath.Join(tmp, "tls", "tls", "ca.pem"))
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in the CA file")
	}
	tlsCfg := &tls.Config{RootCAs: pool}
	secure.url = "https://" + strings.TrimPrefix(secure.url, "http://")
	// warmEndpoint and the rest go through httpc.
	httpc.Transport.(*http.Transport).TLSClientConfig = tlsCfg

	plainEP, err := plain.warmEndpoint("bench-plain", 1)
	if err != nil {
		return fmt.Errorf("plain: %w", err)
	}
	secureEP, err := secure.warmEndpoint("bench-tls", 1)
	if err != nil {
		return fmt.Errorf("tls: %w", err)
	}

	keepAlive := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 4}, Timeout: time.Minute}
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg, DisableKeepAlives: true}, Timeout: time.Minute}
	kinds := []struct {
		name   string
		d      *daemon
		ep     string
		client *http.Client
		ds     []time.Duration
	}{
		{name: "plain HTTP, keep-alive", d: plain, ep: plainEP, client: keepAlive},
		{name: "HTTPS, keep-alive", d: secure, ep: secureEP, client: keepAlive},
		{name: "plain HTTP, new connection per request", d: plain, ep: plainEP, client: fresh},
		{name: "HTTPS, new connection per request", d: secure, ep: secureEP, client: fresh},
	}
	const rounds = 5
	per := max(*tlsN/rounds, 1)
	deadline := time.Now().Add(5 * time.Minute)
	for r := 0; r < rounds && time.Now().Before(deadline); r++ {
		for i := range kinds {
			k := &kinds[i]
			for n := 0; n < per; n++ {
				t := time.Now()
				if err := runsyncOnce(k.client, k.d, k.ep); err != nil {
					return fmt.Errorf("%s: %w", k.name, err)
				}
				k.ds = append(k.ds, time.Since(t))
			}
		}
	}
	// The handshake alone, against the same listener.
	addr := strings.TrimPrefix(secure.url, "https://")
	var dial, hs []time.Duration
	for i := 0; i < *tlsN && time.Now().Before(deadline.Add(time.Minute)); i++ {
		t := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		dial = append(dial, time.Since(t))
		c.Close()
		t = time.Now()
		tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, tlsCfg)
		if err != nil {
			return err
		}
		hs = append(hs, time.Since(t))
		tc.Close()
	}

	fmt.Printf("## TLS on /runsync (warm example workers, %d requests per kind, same run)\n\n", per*rounds)
	fmt.Println("| client | p50 (ms) | p99 (ms) | vs plain keep-alive p50 |")
	fmt.Println("|---|---|---|---|")
	base := median(kinds[0].ds)
	for _, k := range kinds {
		fmt.Printf("| %s | %.3f | %.3f | %+.3f ms |\n", k.name, ms(median(k.ds)), ms(pct(k.ds, 99)), ms(median(k.ds)-base))
	}
	fmt.Printf("| TCP connect alone | %.3f | %.3f | |\n", ms(median(dial)), ms(pct(dial, 99)))
	fmt.Printf("| TCP connect + TLS handshake alone | %.3f | %.3f | |\n", ms(median(hs)), ms(pct(hs, 99)))
	fmt.Printf("\nPer request over keep-alive, TLS adds %.3f ms at the median; a new TLS connection costs %.3f ms\n",
		ms(median(kinds[1].ds)-base), ms(median(kinds[3].ds)-median(kinds[1].ds)))
	fmt.Println("more than reusing one. Workers are on plain HTTP either way (the loopback worker listener).")
	fmt.Println()
	return nil
}

// runsyncOnce posts one /runsync with c and checks that it completed.
func runsyncOnce(c *http.Client, d *daemon, ep string) error {
	req, err := http.NewRequest("POST", d.url+"/v2/"+ep+"/runsync", bytes.NewReader([]byte(`{"input":{"output":1}}`)))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte(`"COMPLETED"`)) {
		return fmt.Errorf("runsync: %d %s", resp.StatusCode, b)
	}
	return nil
}

// pct returns the p-th percentile of ds (sorted in place).
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(len(ds)*p/100, len(ds)-1)]
}
