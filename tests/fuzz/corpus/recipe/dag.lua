local t = {1}
for i = 1, 25 do t = {t, t} end
return { model = 'm', x = t }
