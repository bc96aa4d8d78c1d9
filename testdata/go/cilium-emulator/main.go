// cilium-emulator stands in for cilium-cni in Cilium's delegated-plugin IPAM mode, for tests.
// It calls the IPAM plugin exactly as cilium-cni does (plugins/cilium-cni/cmd/cmd.go):
//
//   - ADD: invoke.DelegateAdd(ctx, n.IPAM.Type, args.StdinData, nil) with the unmodified
//     stdin; no DEL when that fails; the result converted with types100.NewResultFromResult;
//     the last address of each family kept; DelegateDel when a later step fails.
//   - DEL: invoke.DelegateDel with the same stdin, its error returned.
//   - STATUS (config >= 1.1.0): delegated, the IPAM's error returned.
//   - CHECK is not delegated.
//
// Instead of an agent and a veth it reports one interface in the sandbox. Its config knob
// "failAfterIPAM": true makes the step after IPAM fail, to exercise the rollback.
// Built in GOPATH mode on Debian's golang-github-appc-cni-dev (libcni v1.1.2).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

type netConf struct {
	types.NetConf
	FailAfterIPAM bool `json:"failAfterIPAM"`
}

func loadConf(stdin []byte) (*netConf, error) {
	n := &netConf{}
	if err := json.Unmarshal(stdin, n); err != nil {
		return nil, fmt.Errorf("unable to parse CNI configuration %q: %w", string(stdin), err)
	}
	return n, nil
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	n, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	ctx := context.TODO()
	raw, err := invoke.DelegateAdd(ctx, n.IPAM.Type, args.StdinData, nil)
	if err != nil {
		return fmt.Errorf("failed to invoke delegated plugin ADD for IPAM: %w", err)
	}
	defer func() {
		if err != nil {
			_ = invoke.DelegateDel(ctx, n.IPAM.Type, args.StdinData, nil)
		}
	}()
	ipam, err := types100.NewResultFromResult(raw)
	if err != nil {
		return err
	}
	var v4, v6 *types100.IPConfig
	for _, ip := range ipam.IPs {
		if ip.Address.IP.To4() != nil {
			v4 = ip
		} else {
			v6 = ip
		}
	}
	if v4 == nil && v6 == nil {
		return fmt.Errorf("IPAM did provide neither IPv4 nor IPv6 address")
	}
	if n.FailAfterIPAM {
		return fmt.Errorf("unable to create endpoint: the emulator was told to fail after IPAM")
	}
	zero := 0
	result := &types100.Result{CNIVersion: types100.ImplementedSpecVersion, Interfaces: []*types100.Interface{{Name: args.IfName, Sandbox: args.Netns}}}
	for _, ip := range []*types100.IPConfig{v4, v6} {
		if ip == nil {
			continue
		}
		bits := 32
		if ip.Address.IP.To4() == nil {
			bits = 128
		}
		// cilium gives the pod a host route: /32 or /128.
		result.IPs = append(result.IPs, &types100.IPConfig{Interface: &zero, Address: net.IPNet{IP: ip.Address.IP, Mask: net.CIDRMask(bits, bits)}})
	}
	return types.PrintResult(result, n.CNIVersion)
}

func cmdDel(args *skel.CmdArgs) error {
	n, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	if n.IPAM.Type != "" {
		return invoke.DelegateDel(context.TODO(), n.IPAM.Type, args.StdinData, nil)
	}
	return nil
}

func cmdCheck(args *skel.CmdArgs) error { return nil }

// status: this libcni's skel predates STATUS, so it is dispatched here, as newer skel does.
func status() {
	stdin, err := readAll()
	if err == nil {
		var n *netConf
		if n, err = loadConf(stdin); err == nil {
			var gte bool
			if gte, err = version.GreaterThanOrEqualTo(n.CNIVersion, "1.1.0"); err == nil && !gte {
				err = types.NewError(types.ErrIncompatibleCNIVersion, "config version does not allow STATUS", "")
			} else if err == nil && n.IPAM.Type != "" {
				var plugin string
				plugin, err = invoke.FindInPath(n.IPAM.Type, filepath.SplitList(os.Getenv("CNI_PATH")))
				if err == nil {
					err = invoke.ExecPluginWithoutResult(context.TODO(), plugin, stdin, &invoke.DelegateArgs{Command: "STATUS"}, nil)
				}
			}
		}
	}
	if err != nil {
		e, ok := err.(*types.Error)
		if !ok {
			e = types.NewError(types.ErrInternal, err.Error(), "")
		}
		_ = e.Print()
		os.Exit(1)
	}
}

func readAll() ([]byte, error) {
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := os.Stdin.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			if err.Error() == "EOF" {
				return out, nil
			}
			return out, err
		}
	}
}

func main() {
	if os.Getenv("CNI_COMMAND") == "STATUS" {
		status()
		return
	}
	skel.PluginMain(cmdAdd, cmdCheck, cmdDel, version.All, "cilium-cni emulator")
}
