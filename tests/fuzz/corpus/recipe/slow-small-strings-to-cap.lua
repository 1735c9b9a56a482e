local t = {}
for i = 0, 1e9 do t[i] = ('x'):rep(26) .. i end
