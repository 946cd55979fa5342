package httpapi

import (
	"net/http"
)

// GPUStats is a GPU's live readings (oci/gpu.Stats reads them from NVML).
type GPUStats struct {
	// UtilizationPercent is the share of the last sample period (1/6 s to
	// 1 s, by model) during which a kernel ran on the GPU.
	UtilizationPercent uint32
	MemoryUsedBytes    uint64
	MemoryTotalBytes   uint64
	TemperatureC       uint32
}

// gpuJSON is one GPU in GET /v1/gpus. The live readings are left out when
// the daemon has no GPUStats function, and for a GPU whose reading failed
// (StatsError then says why).
type gpuJSON struct {
	// Index is the GPU's position in the daemon's inventory (NVML order,
	// without the GPUs left out at startup: MIG-enabled or unhealthy).
	Index            int    `json:"index"`
	UUID             string `json:"uuid"`
	Name             string `json:"name"`
	MemoryTotalBytes uint64 `json:"memoryTotalBytes"`
	// Worker and EndpointID hold it; both empty when it is free.
	Worker     string `json:"worker,omitempty"`
	EndpointID string `json:"endpointId,omitempty"`
	// Unhealthy is why it was taken out of placement; empty when healthy.
	Unhealthy          string  `json:"unhealthy,omitempty"`
	UtilizationPercent *uint32 `json:"utilizationPercent,omitempty"`
	MemoryUsedBytes    *uint64 `json:"memoryUsedBytes,omitempty"`
	TemperatureC       *uint32 `json:"temperatureC,omitempty"`
	StatsError         string  `json:"statsError,omitempty"`
}

// serveGPUs answers GET /v1/gpus (the caller checked the key):
// {"gpus":[...]} in inventory order, an empty list without GPUs.
func (h *Server) serveGPUs(w http.ResponseWriter, r *http.Request, rest []string) {
	if len(rest) != 0 {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on /v1/gpus; use GET")
		return
	}
	out := []gpuJSON{}
	if h.s != nil {
		for i, g := range h.s.GPUs() {
			j := gpuJSON{Index: i, UUID: g.UUID, Name: g.Name, MemoryTotalBytes: g.MemoryBytes,
				Worker: g.Worker, EndpointID: g.EndpointID, Unhealthy: g.Unhealthy}
			if h.cfg.GPUStats != nil {
				st, err := h.cfg.GPUStats(g.UUID)
				if err != nil {
					j.StatsError = err.Error()
				} else {
					j.UtilizationPercent, j.MemoryUsedBytes, j.TemperatureC = &st.UtilizationPercent, &st.MemoryUsedBytes, &st.TemperatureC
					if j.MemoryTotalBytes == 0 {
						j.MemoryTotalBytes = st.MemoryTotalBytes
					}
				}
			}
			out = append(out, j)
		}
	}
	writeJSON(w, struct {
		GPUs []gpuJSON `json:"gpus"`
	}{out})
}
