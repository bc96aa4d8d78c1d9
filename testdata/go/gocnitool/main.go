// gocnitool is upstream cnitool's logic on Debian's libcni (v1.1.2), built in GOPATH mode.
// It is the Go side of our interop tests: same CLI, env, container-ID derivation and cache.
//
//	gocnitool add|check|del <net> <netns>
//
// Env: NETCONFPATH, CNI_PATH, CNI_ARGS, CAP_ARGS, CNI_IFNAME, CNI_CACHE_DIR.
package main

import (
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: gocnitool add|check|del <net> <netns>")
		os.Exit(2)
	}
	netdir := os.Getenv("NETCONFPATH")
	if netdir == "" {
		netdir = "/etc/cni/net.d"
	}
	netconf, err := libcni.LoadConfList(netdir, os.Args[2])
	if err != nil {
		fail(err)
	}
	var capabilityArgs map[string]interface{}
	if v := os.Getenv("CAP_ARGS"); v != "" {
		if err := json.Unmarshal([]byte(v), &capabilityArgs); err != nil {
			fail(err)
		}
	}
	var cniArgs [][2]string
	if v := os.Getenv("CNI_ARGS"); v != "" {
		for _, pair := range strings.Split(v, ";") {
			kv := strings.Split(pair, "=")
			if len(kv) != 2 {
				fail(fmt.Errorf("invalid CNI_ARGS pair %q", pair))
			}
			cniArgs = append(cniArgs, [2]string{kv[0], kv[1]})
		}
	}
	ifName, ok := os.LookupEnv("CNI_IFNAME")
	if !ok {
		ifName = "eth0"
	}
	netns, err := filepath.Abs(os.Args[3])
	if err != nil {
		fail(err)
	}
	s := sha512.Sum512([]byte(netns))
	containerID := fmt.Sprintf("cnitool-%x", s[:10])
	cninet := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(os.Getenv("CNI_PATH")), os.Getenv("CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         ifName,
		Args:           cniArgs,
		CapabilityArgs: capabilityArgs,
	}
	ctx := context.TODO()
	switch os.Args[1] {
	case "add":
		result, err := cninet.AddNetworkList(ctx, netconf, rt)
		if result != nil {
			_ = result.Print()
		}
		if err != nil {
			fail(err)
		}
	case "check":
		if err := cninet.CheckNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	case "del":
		if err := cninet.DelNetworkList(ctx, netconf, rt); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}
