return { model = 'm', datasets = { a = 'x.jsonl' }, stages = { { type = 'eval', dataset = 'a' } } }
