-- wrk script for bench/serve_load.sh: a mix of requests against autoneg serve, round robin over
-- completions and chat (streamed or not), /v1/negatives, and four models (the base and three adapters).
-- KEY comes from the environment (wrk's Lua has os.getenv).
local key = os.getenv("AUTONEG_KEY") or ""
local models = {"base", "a1", "a2", "a3"}
local kinds = {
  {"/v1/completions", '{"model": "%s", "prompt": "Once upon a time", "max_tokens": 32, "seed": %d}'},
  {"/v1/completions", '{"model": "%s", "prompt": "The dog", "max_tokens": 32, "seed": %d, "stream": true}'},
  {"/v1/chat/completions", '{"model": "%s", "messages": [{"role": "user", "content": "a cat"}], "max_tokens": 32, "seed": %d, "stream": true}'},
  {"/v1/negatives", '{"model": "%s", "prompts": ["a castle at dusk", "a red car"], "max_tokens": 32, "seed": %d}'},
}
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  n = 0
end
function request()
  n = n + 1
  local k = kinds[(n % #kinds) + 1]
  local m = models[((n + id) % #models) + 1]
  local headers = {["Content-Type"] = "application/json"}
  if key ~= "" then headers["Authorization"] = "Bearer " .. key end
  return wrk.format("POST", k[1], headers, string.format(k[2], m, n))
end
