// The Go twin of the axum-service example, for measuring Go's own
// net/http/pprof overhead in the same run as profscope's.
package main

import (
	"crypto/sha256"
	"flag"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof"
	"strconv"
)

func work(n int) [32]byte {
	buf := make([]byte, 1024)
	for i := range buf {
		buf[i] = 0x5a
	}
	var d [32]byte
	for i := 0; i < n; i++ {
		d = sha256.Sum256(buf)
		copy(buf[:32], d[:])
	}
	return d
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "listen address")
	flag.Parse()
	http.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil {
			n = 1
		}
		d := work(n)
		fmt.Fprintf(w, "%x\n", d[:4])
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		panic(err)
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	panic(http.Serve(ln, nil))
}
