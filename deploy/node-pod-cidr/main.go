// node-pod-cidr prints this node's spec.podCIDR, read from the API server with the pod's
// service account. It is the install image's only network client: a static binary that
// verifies the API server against the service account's CA (busybox wget cannot, see
// deploy/README.md). Standard library only.
//
// Environment: KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT (set by kubelet), NODE_NAME.
// Exit 0: the CIDR on stdout, or nothing when the node has none. Exit 1: the API server could
// not be asked or gave no Node (unreachable, timeout, TLS, HTTP error); the reason on stderr.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const serviceAccount = "/var/run/secrets/kubernetes.io/serviceaccount"

// Bounds the whole request, so an unreachable API server (dropped packets) delays an offline
// node's install by at most this much.
const timeout = 10 * time.Second

func main() {
	cidr, err := podCIDR()
	if err != nil {
		fmt.Fprintf(os.Stderr, "node-pod-cidr: %v\n", err)
		os.Exit(1)
	}
	if cidr != "" {
		fmt.Println(cidr)
	}
}

func podCIDR() (string, error) {
	host, port, node := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"), os.Getenv("NODE_NAME")
	if host == "" || port == "" || node == "" {
		return "", fmt.Errorf("KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT and NODE_NAME must be set")
	}
	caPEM, err := os.ReadFile(serviceAccount + "/ca.crt")
	if err != nil {
		return "", err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return "", fmt.Errorf("%s/ca.crt holds no certificate", serviceAccount)
	}
	token, err := os.ReadFile(serviceAccount + "/token")
	if err != nil {
		return "", err
	}
	client := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}
	endpoint := "https://" + net.JoinHostPort(host, port) + "/api/v1/nodes/" + url.PathEscape(node)
	req, err := http.NewRequest(http.MethodGet, endpoint, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return "", fmt.Errorf("GET %s: %v", endpoint, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %.200s", endpoint, resp.Status, body)
	}
	var obj struct {
		Kind string `json:"kind"`
		Spec struct {
			PodCIDR string `json:"podCIDR"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(body, &obj); err != nil || obj.Kind != "Node" {
		return "", fmt.Errorf("GET %s: the answer is not a Node: %.200s", endpoint, body)
	}
	if obj.Spec.PodCIDR == "" {
		return "", nil
	}
	if _, _, err := net.ParseCIDR(obj.Spec.PodCIDR); err != nil {
		return "", fmt.Errorf("node %s: spec.podCIDR %q is not a CIDR", node, obj.Spec.PodCIDR)
	}
	return obj.Spec.PodCIDR, nil
}
