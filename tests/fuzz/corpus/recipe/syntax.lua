return { model = 'm',, }
