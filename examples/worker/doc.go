// Command worker is Ember's example worker: a Go program that speaks the RunPod Serverless
// worker protocol exactly as runpod-python SDK 1.12 does on the wire (docs/compat.md,
// Worker protocol), with a handler whose behaviour is chosen by the job input.
// The daemon's tests and `make run` use it as a stand-in for a real worker image, so the
// input contract below is stable: change it only together with its tests.
//
// # Environment
//
//	RUNPOD_WEBHOOK_GET_JOB      take URL, $ID -> worker id (required: exit 2 without it)
//	RUNPOD_WEBHOOK_POST_OUTPUT  job-done URL, $RUNPOD_POD_ID -> worker id, $ID -> job id
//	RUNPOD_WEBHOOK_POST_STREAM  job-stream URL, same substitutions
//	RUNPOD_WEBHOOK_PING         ping URL, $RUNPOD_POD_ID -> worker id
//	RUNPOD_AI_API_KEY           sent raw as "Authorization: <key>"
//	RUNPOD_POD_ID               worker id (random uuid4 if unset; then no pings, as in the SDK)
//	RUNPOD_PING_INTERVAL        ping period in ms (default 10000)
//	RUNPOD_ENDPOINT_ID          added to log lines
//	RUNPOD_POD_HOSTNAME         "hostname" in exception reports (default "unknown")
//	RUNPOD_LOG_LEVEL            DEBUG, INFO (default), WARN, ERROR
//	WORKER_CONCURRENCY          jobs held at once (default 1); >1 uses batch takes
//	WORKER_RETRY_DELAY_MS       first pause between result-post retries (default 2000; the
//	                            second pause is 1.5x)
//
// # Input contract
//
// The handler reads these keys from the job's input object; all are optional, unknown keys
// and keys of the wrong type are ignored. They act in this order: alloc_mb, block_ms,
// sleep_ms and progress, exit, then openai_route, stream or the final result.
//
//	sleep_ms        int     sleep this long before finishing; a stop signal interrupts it
//	block_ms        int     sleep this long ignoring stop signals and shutdown, like a
//	                        synchronous Python handler blocking the event loop (pings go on
//	                        and list the job); a job stopped meanwhile then posts nothing
//	progress        int N   send N progress updates "progress i/N" (i = 1..N), one at the
//	                        start of each of N equal slices of sleep_ms
//	stream          int N   generator job: N chunk posts, chunk i is "chunk i" (from 1),
//	                        then job-done isStream=true {"output":["chunk 1",...]}
//	stream_delay_ms int     pause before each chunk (default 0)
//	stream_flood    object  {"chunks": N, "bytes": B}: a generator flooding job-stream with N
//	                        chunks, each a string of B bytes (quotes included), back to back;
//	                        refused posts are logged and the flood goes on (as in the SDK), a
//	                        stop signal ends it; then job-done isStream=true {"output":[]}.
//	                        Wins over stream
//	fail            string  final body {"error": <string>}; in a stream job, after the chunks
//	raise           string  as if the handler raised RuntimeError: {"error": "<JSON string of
//	                        {error_type, error_message, error_traceback, hostname, worker_id,
//	                        runpod_version}>"}; in a stream job {"error": "handler: <msg>
//	                        \ntraceback: ..."}. Wins over fail; never gets stopPod.
//	exit            int     exit the process with this code while holding the job (no job-done)
//	refresh_worker  bool    add "stopPod": true to the final body; the worker keeps running
//	output          any     the handler's return value; otherwise {"echo": <input>}. The
//	                        SDK's dict rules apply: {} -> body {}, a top-level "error" or
//	                        "refresh_worker" key is lifted out into error / stopPod
//	echo_job        bool    return the whole job object received (id, input, s3Config,
//	                        webhook, ...) instead of {"echo": input}; output wins over it
//	echo_env        string  return {"env": NAME, "value": its value, "set": bool} for the
//	                        worker's environment variable NAME; output and echo_job win
//	alloc_mb        int     allocate and touch this many MiB, held until the job ends
//	openai_route    string  OpenAI mode, below; stream, fail, raise, output and echo_job
//	                        are then ignored
//	openai_input    object  the OpenAI request body (absent for GET /v1/models)
//
// Input that is not an object is echoed: {"echo": <input>}.
//
// # OpenAI mode
//
// With openai_route the handler behaves like worker-vllm answering the platform's
// /openai/v1/... passthrough (docs/compat.md, OpenAI route): a generator with
// return_aggregate_stream, so each yielded value is one chunk post and the final
// isStream=true post carries the list of them. The model echoes: the completion text is the last chat message's content
// (string, or its "text" parts joined with spaces) or the prompt (a list of strings is
// joined with spaces); usage counts words.
//
//	/v1/models            yields {"object":"list","data":[{"id":"ember-echo","object":"model"}]}
//	/v1/chat/completions  yields one chat.completion object (model from the input, default
//	                      "ember-echo"; id "chatcmpl-<job id>"); with "stream": true, one
//	                      "data: {chat.completion.chunk}\n\n" string per word (the role in the
//	                      first, finish_reason "stop" in the last), then "data: [DONE]\n\n"
//	/v1/completions       the same with text_completion objects (id "cmpl-<job id>")
//	other routes          the error below with "route ... is not served" and code 404
//
// openai_input.model "error" yields {"error":{"message":"model not found","type":
// "invalid_request_error","code":404}}. As in the SDK, a yielded error is not posted as a
// chunk: the job-done body is {"error": "<Python str() of the inner dict>"} with
// isStream=true, i.e. {'message': 'model not found', 'type': 'invalid_request_error',
// 'code': 404}. sleep_ms, stream_delay_ms (pause before each yield) and block_ms are also
// read from openai_input (an OpenAI SDK's extra_body), where they win.
//
// # Protocol behaviour
//
// Takes: one job needed -> GET {take}&job_in_progress=0|1; more -> the /job-take-batch/
// URL with &batch_size=N&job_in_progress=0|1. 200 object or array (at most N used), 204
// and 400 re-poll at once, 429 waits 5 s, other failures wait 100 ms. 90 s per take.
// Stop channel: GET /job-stop/ long-poll; {"jobsToStop":[ids]} cancels those jobs, which
// then post nothing. Pings: GET {ping}&job_id=<ids>&runpod_version=1.12.0 at start and
// every interval. Results: POST {done}&isStream=false|true, Content-Type
// application/x-www-form-urlencoded, raw JSON body, 3 attempts on 5xx only.
// SIGTERM/SIGINT: stop taking, finish and report held jobs, exit 0.
package main
