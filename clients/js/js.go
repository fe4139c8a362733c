// Package js holds maple.js, the JavaScript client of maple over WebSocket
// (clients/js/maple.js), for Go programs that serve it to browsers, like
// `maple dev`. It has no Go API beyond the file's bytes.
package js

import _ "embed"

// Source is maple.js, an ES module with no dependencies.
//
//go:embed maple.js
var Source []byte
