package templates

import "slices"

// The built-in templates: one per common RunPod worker kind. They are
// compiled in, never written to the store's file, and cannot be changed or
// deleted; an operator who wants other defaults creates a template from
// one (ember template show NAME --json). Their images are not shipped: an
// offline appliance imports them (ember image load) before a deploy, which
// says so when one is missing.
var builtinTemplates = []Template{
	{
		Name:     "basic",
		Category: "handler",
		Description: "A queue-based handler worker, RunPod's basic worker kind: the example worker that " +
			"make run imports (it echoes its input, streams, and fails on request). " +
			"Replace the image with your own handler's for a worker of your own.",
		Image:          "ember/example-worker:latest",
		GPUCount:       0,
		WorkersMax:     2,
		IdleTimeoutSec: 30,
	},
	{
		Name:     "vllm",
		Category: "llm",
		Description: "RunPod's vLLM worker (runpod-workers/worker-vllm): an OpenAI-compatible LLM server. " +
			"Give MODEL_NAME (a Hugging Face model id, its weights reachable or baked into the image). " +
			"Its OpenAI route is /v2/{endpoint}/openai/v1 (chat/completions, completions, models); " +
			"/run and /runsync take the worker's native input.",
		Image: "runpod/worker-v1-vllm:v2.7.0stable-cuda12.1.0",
		Env: []EnvVar{
			{Name: "MODEL_NAME", Required: true, Description: "the Hugging Face model id or local path of the model to serve, e.g. Qwen/Qwen2.5-0.5B-Instruct"},
			{Name: "MAX_MODEL_LEN", Description: "the longest context, prompt and output together, in tokens; unset: the model's own"},
			{Name: "DTYPE", Default: "auto", Description: "weights and activations type: auto, half, float16, bfloat16 or float32"},
			{Name: "TENSOR_PARALLEL_SIZE", Default: "1", Description: "GPUs the model is split across; set gpuCount to the same number"},
			{Name: "QUANTIZATION", Description: "the quantisation of the weights (awq, gptq, fp8, bitsandbytes...); unset: none"},
			{Name: "GPU_MEMORY_UTILIZATION", Default: "0.95", Description: "the share of each GPU's memory vLLM may take, 0 to 1"},
			{Name: "MAX_CONCURRENCY", Default: "300", Description: "jobs one worker runs at once (vLLM batches them)"},
			{Name: "OPENAI_SERVED_MODEL_NAME_OVERRIDE", Description: "the model name clients give on the OpenAI route; unset: MODEL_NAME"},
			{Name: "TRUST_REMOTE_CODE", Default: "0", Description: "1 lets the model's repository run its own Python code (some architectures need it)"},
			{Name: "HF_TOKEN", Secret: true, Description: "a Hugging Face token, for gated or private models"},
		},
		GPUCount:       1,
		WorkersMax:     1,
		IdleTimeoutSec: 60,
	},
	{
		Name:     "text-embeddings",
		Category: "embedding",
		Description: "RunPod's text embedding and reranking worker (runpod-workers/worker-infinity-embedding, " +
			"on the Infinity engine). Give MODEL_NAMES; its OpenAI route is /v2/{endpoint}/openai/v1 " +
			"(embeddings, models); /run and /runsync take {\"model\",\"input\"} or a rerank query.",
		Image: "runpod/worker-infinity-embedding:latest",
		Env: []EnvVar{
			{Name: "MODEL_NAMES", Required: true, Description: "Hugging Face model ids separated by ';', e.g. BAAI/bge-small-en-v1.5"},
			{Name: "BATCH_SIZES", Default: "32", Description: "the batch size of each model, separated by ';' in the order of MODEL_NAMES"},
			{Name: "BACKEND", Default: "torch", Description: "the inference backend of every model: torch, optimum or ctranslate2"},
			{Name: "DTYPES", Default: "auto", Description: "the type of each model, separated by ';': auto, fp16 or fp8"},
			{Name: "INFINITY_QUEUE_SIZE", Default: "48000", Description: "requests the engine queues before it refuses more"},
			{Name: "RUNPOD_MAX_CONCURRENCY", Default: "300", Description: "jobs one worker runs at once"},
			{Name: "HF_TOKEN", Secret: true, Description: "a Hugging Face token, for gated or private models"},
		},
		GPUCount:       1,
		WorkersMax:     1,
		IdleTimeoutSec: 60,
	},
}

func init() {
	for i := range builtinTemplates {
		builtinTemplates[i].Builtin = true
		builtinTemplates[i].Version = 1
		if err := Validate(builtinTemplates[i]); err != nil {
			panic("built-in template " + builtinTemplates[i].Name + ": " + err.Error())
		}
	}
}

// builtins is a copy of the built-in templates, in their order.
func builtins() []Template {
	out := make([]Template, len(builtinTemplates))
	for i, t := range builtinTemplates {
		out[i] = t.clone()
	}
	return out
}

// builtin is the built-in template called name.
func builtin(name string) (Template, bool) {
	i := slices.IndexFunc(builtinTemplates, func(t Template) bool { return t.Name == name })
	if i < 0 {
		return Template{}, false
	}
	return builtinTemplates[i].clone(), true
}

func isBuiltin(name string) bool {
	_, ok := builtin(name)
	return ok
}
