local t = {1}
for y = 1, 25 do t = {t, t} end
return { model == 4 }
