// Package replica holds the replicas an engine writes to and the data
// protocol between nodes. Local is the replica in this node's pool; Server
// serves a pool's chains to the engines of other nodes and Remote is their
// client, one connection per volume replica; Control is the client of the
// volume-level operations (create, delete, list, checksums, extents).
// Epochs fences stale engines on both paths (architecture invariant 3).
//
// # Data protocol
//
// One TCP connection carries requests from the client and replies from the
// server. Every integer is big-endian (network byte order).
//
// A request is a 36-byte header followed by plen bytes of payload:
//
//	offset size field
//	 0     4    magic   0x53545251 ("STRQ")
//	 4     2    op      see below
//	 6     2    flags   0; anything else is refused
//	 8     8    handle  chosen by the client, echoed by the reply
//	16     8    offset  first argument of the op
//	24     8    length  second argument of the op
//	32     4    plen    payload bytes that follow, at most MaxPayload
//
// A reply is a 20-byte header followed by plen bytes of payload:
//
//	 0     4    magic   0x53545250 ("STRP")
//	 4     2    status  0 for success, else an error code
//	 6     2    zero
//	 8     8    handle  of the request answered
//	16     4    plen    payload bytes that follow, at most MaxPayload
//
// An error reply's payload is a UTF-8 message (at most 4 KiB) and its status
// one of: 1 invalid argument, 2 not found, 3 already exists, 4 failed
// precondition, 5 no space, 6 unavailable, 7 stale epoch (a failed
// precondition: see ErrStaleEpoch), 8 internal. The client turns them back
// into errors wrapping the errdefs sentinel of the same name.
//
// In payloads a string (str) is a 2-byte length and that many bytes, a u64
// is 8 bytes. Ops, with their arguments and what a successful reply carries:
//
//	 1 hello      offset epoch, length version (1), str volume -> u64 size
//	 2 read       offset, length (at most MaxPayload) -> length bytes
//	 3 write      offset, payload the data -> nothing
//	 4 flush      -> nothing
//	 5 trim       offset, length -> nothing
//	 6 zeroes     offset, length -> nothing
//	 7 size       -> u64 size
//	 8 grow       length the new size -> nothing
//	 9 snapshot   str name -> nothing
//	10 create     length size, str volume -> nothing
//	11 delete     str volume -> nothing
//	12 list       -> one str per volume, sorted
//	13 checksums  offset, length, u64 region then str volume ->
//	              one 32-byte SHA-256 per region (the last may be short)
//	14 extents    offset resume point, str volume, str from, str to ->
//	              u64 offset and u64 length per changed extent
//	15 revert     str snapshot (the chain's latest) -> nothing
//	16 snapshots  str volume -> one str per snapshot, oldest first
//	17 delete-snapshot
//	              str volume, str snapshot -> u64 clones that keep
//	              its layers
//	18 checkpoint -> nothing; everything written before is durable on
//	              every in-sync replica: the dirty-region log drops the
//	              regions not written since the previous checkpoint
//	19 dirty      str volume -> u64 offset per region (4 MiB) the
//	              dirty-region log lists, in increasing order
//	20 clone      length size (0: the snapshot's), str volume, str
//	              snapshot, str new volume -> nothing
//
// The first request of a connection must be hello. It binds the connection
// to one volume and epoch for its lifetime (there is no per-request
// handshake): the server opens the volume's chain and its fence (see
// Epochs.Open), refusing an older epoch with status 7 and then closing the
// connection. An empty volume name makes a control connection, which takes
// only the volume-level ops 10 to 14, 16, 17, 19 and 20 (size 0 in the hello
// reply); those work on data connections too. Ops 2 to 9, 15 and 18 go
// through the connection's fence: once a later hello (or Local) raises
// the volume's epoch on the node, they fail with status 7 and change
// nothing. Writes, trims, write-zeroes and reverts through the fence
// first record the regions they touch in the volume's dirty-region log on
// the node (see Epochs.DirtyRegions). Ops 16 and 17 leave the head alone
// (a snapshot delete merges layers, keeping what every read returns), so
// they need no fence.
//
// After hello, the client may send any number of requests without waiting.
// The server reads up to 64 requests (and 64 MiB of payload) ahead of its
// replies, runs up to 16 at once per connection, and answers each as it
// completes, so replies may come out of order; replies that complete
// together leave in one write. Consecutive writes are thus applied side by
// side, each acknowledged once it is in the chain (the page cache); flush
// makes the writes acknowledged before it durable.
//
// Extents replies hold at most 1<<20 extents, those starting at or after
// the offset argument; a full reply means more may follow from the end of
// its last extent. Checksums take at most MaxPayload/32 regions.
//
// Broken framing is never guessed at: a bad magic or a truncated frame
// closes the connection; a plen over MaxPayload gets an error reply and
// then the connection is closed; an unknown op, non-zero flags, a read
// longer than MaxPayload or a malformed payload get an error reply
// (invalid argument) and the connection goes on.
package replica
