-- wrk script: cycle through the request paths of a file, one per line.
--   wrk ... -s bench/paths.lua http://host:port -- <paths file> <threads>
-- Each wrk thread starts at its own offset (thread i of n at i/n of the
-- file), so the threads do not ask for the same ticket at the same moment.

local created = 0

function setup(thread)
   thread:set("index", created)
   created = created + 1
end

function init(args)
   paths = {}
   for line in io.lines(args[1]) do
      if #line > 0 then
         paths[#paths + 1] = line
      end
   end
   if #paths == 0 then
      error("no request paths in " .. args[1])
   end
   local threads = tonumber(args[2]) or 1
   position = math.floor(#paths * index / threads) % #paths
end

function request()
   position = position % #paths + 1
   return wrk.format(nil, paths[position])
end
