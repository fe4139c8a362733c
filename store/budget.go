package store

// DefaultWriteBudget is the most bytes one stream entry, one list element
// or one pipeline of the farm carries: bigger batches are split. It keeps
// every write far below Redis's limits (512 MiB per bulk string by
// default), whatever clients send, and bounds the buffers a round trip
// needs on both sides.
const DefaultWriteBudget = 8 << 20
