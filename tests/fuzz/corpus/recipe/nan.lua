return { model = 'm', datasets = {}, stages = { { type = 'grpo', dataset = 'a', beta = 0/0 } } }
