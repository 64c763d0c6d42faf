// One HTTP request over a Unix socket with Go's net/http (a transport that dials the socket),
// for tokend's end-to-end tests: client SOCKET METHOD TARGET [BODY_FILE]. Prints the answer
// as JSON: status, Tokend-Error header, body.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	socket, method, target := os.Args[1], os.Args[2], os.Args[3]
	var body io.Reader
	if len(os.Args) > 4 {
		data, err := os.ReadFile(os.Args[4])
		if err != nil {
			fail(err)
		}
		body = bytes.NewReader(data)
	}
	client := &http.Client{
		Timeout: 120 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", socket)
			},
		},
		// Redirects are the caller's to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	request, err := http.NewRequest(method, "http://tokend"+target, body)
	if err != nil {
		fail(err)
	}
	answer, err := client.Do(request)
	if err != nil {
		fail(err)
	}
	defer answer.Body.Close()
	data, err := io.ReadAll(answer.Body)
	if err != nil {
		fail(err)
	}
	var tokendError *string
	if value := answer.Header.Get("Tokend-Error"); value != "" {
		tokendError = &value
	}
	out, _ := json.Marshal(map[string]any{"status": answer.StatusCode, "tokend_error": tokendError, "body": string(data)})
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
