-- Put before publish.lua and read.lua on a Redis Cluster (same KEYS). A room whose keys reached
-- this node by a failover may have lost its newest messages (replication is asynchronous), and
-- their offsets would be given again to new messages, which relays would drop as duplicates.
-- Such a room starts over with a new epoch instead: members get `gap`, rejoining clients
-- `recovered: false`, never a silent hole. The meta hash keeps the replication id of the node
-- that last wrote it; a replica promoted since knows its old master's as master_replid2. A room
-- that came by a slot migration (which loses nothing) is adopted as it is.
do
  local info = redis.call('INFO', 'replication')
  local node = string.match(info, 'master_replid:(%x+)')
  local wrote = redis.call('HGET', KEYS[1], 'node')
  if wrote ~= node then
    if wrote and wrote == string.match(info, 'master_replid2:(%x+)') then
      redis.call('DEL', KEYS[1], KEYS[2])
    end
    redis.call('HSET', KEYS[1], 'node', node)
  end
end
