return { model = 'm', { 1 }, x = 2, [3.5] = 1, stages = { { type = 'rl' } } }
