local co = coroutine.wrap(function() local x <close> = setmetatable({}, {__close = function() while true do end end}) coroutine.yield() end)
co()
return { model = 'm' }
