local G = 4
function steps(n) return n * 2 end
local t = {}
for i = 1, 3 do t[#t + 1] = { type = 'eval', dataset = 'a', name = 'e' .. i } end
t[#t + 1] = { type = 'grpo', dataset = 'a', num_generations = G, generation_batch_size = 2 * G, max_steps = steps(5),
  stop = { '</answer>' }, rewards = { 'boxed_math:1.0', { script = 'think_format', weight = 0.2 } } }
return { model = 'm', name = os.getenv('NOPE') or 'x', template = 'Q: {prompt}', datasets = { a = { path = 'x', limit = 5 } }, stages = t }
