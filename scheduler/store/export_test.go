package store

// SetReserve changes the free space that a Badger store's writes must
// leave (BadgerOptions.Reserve), for the conformance suite's space test.
// The committer reads it when it takes the next commit off its queue,
// which orders this write before that read.
func SetReserve(s *Badger, n uint64) { s.opts.Reserve = n }
