// Command etcd-cluster runs a local 3-member etcd cluster in one process,
// for `make cluster` and for trying threadctl's etcd store by hand: members
// on 127.0.0.1, client ports 2379, 22379 and 32379 (peers on 3379, 23379,
// 33379), data under -dir. It is a demo and test tool: threadctl never
// starts etcd, and production runs etcd's own binaries.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/threadctl/threadctl/store/etcd/etcdtest"
)

func main() {
	dir := flag.String("dir", "data/etcd", "directory of the members' data (kept across runs)")
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c, err := etcdtest.Start(etcdtest.Options{Members: 3, Dir: *dir, Ports: []int{2379, 22379, 32379}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcd-cluster:", err)
		os.Exit(1)
	}
	fmt.Println("etcd cluster ready:", strings.Join(c.Endpoints(), ","))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	c.Close()
}
