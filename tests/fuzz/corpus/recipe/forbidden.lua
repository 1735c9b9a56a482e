os.execute('true')
io.popen('true')
io.open('/tmp/x', 'w')
return {}
