// pause: the process that holds a pod's namespaces (the kubelet's "sandbox image").
//
// The same behaviour as upstream's build/pause/linux/pause.c: wait for signals forever, reap
// children (it is PID 1 of the pod's PID namespace when that is shared), exit 0 on SIGINT or
// SIGTERM. Built statically with CGO_ENABLED=0 by scripts/images, on an empty image, because no
// image can be pulled here (registry.k8s.io/pause included).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set by scripts/images (-X main.version=...).
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Printf("pause.go %s\n", version)
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
