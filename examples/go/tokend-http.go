// tokend's HTTP API from Go, with net/http alone.
//
// Let tokend add the token (the profile needs an api_base); a 401 is retried by tokend, and
// this program never holds the token:
//
//	answer, err := tokend.Get("http://tokend/v1/proxy/minut/users/me")
//
// Or ask for the token, call the API yourself, and after a 401 report it and retry once:
//
//	token, err := getToken("minut")                         // as `tokenctl token --format json`
//	token, err = invalidate("minut", token.AccessToken)     // after a 401
//
// Run it: `go run tokend-http.go PROFILE proxy PATH` sends GET PATH through the proxy, and
// `go run tokend-http.go PROFILE token URL` calls URL with a token; each prints the body.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// tokend is an HTTP client whose every connection goes to tokend's socket:
// $TOKEND_HTTP_SOCKET, else http.sock in tokend's runtime directory.
var tokend = &http.Client{Transport: &http.Transport{
	DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		socket := os.Getenv("TOKEND_HTTP_SOCKET")
		if socket == "" {
			socket = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "tokend", "http.sock")
		}
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	},
}}

// Token is what /v1/token answers.
type Token struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	Fingerprint string `json:"fingerprint"`
}

func tokenAPI(method, path, body string) (Token, error) {
	request, err := http.NewRequest(method, "http://tokend"+path, strings.NewReader(body))
	if err != nil {
		return Token{}, err
	}
	answer, err := tokend.Do(request)
	if err != nil {
		return Token{}, err
	}
	defer answer.Body.Close()
	if answer.StatusCode != http.StatusOK {
		var failure struct{ Error, Message string }
		json.NewDecoder(answer.Body).Decode(&failure)
		return Token{}, fmt.Errorf("tokend: %s: %s", failure.Error, failure.Message)
	}
	var token Token
	return token, json.NewDecoder(answer.Body).Decode(&token)
}

// getToken returns the current token of profile.
func getToken(profile string) (Token, error) {
	return tokenAPI("GET", "/v1/token/"+profile, "")
}

// invalidate tells tokend the API rejected this token, and returns a new one.
func invalidate(profile, rejected string) (Token, error) {
	body, _ := json.Marshal(map[string]string{"token": rejected})
	return tokenAPI("POST", "/v1/invalidate/"+profile, string(body))
}

// callAPI GETs url with a token from tokend, reporting it and retrying once after a 401.
func callAPI(profile, url string) (*http.Response, error) {
	token, err := getToken(profile)
	if err != nil {
		return nil, err
	}
	answer, err := get(url, token)
	if err != nil || answer.StatusCode != http.StatusUnauthorized {
		return answer, err
	}
	answer.Body.Close()
	if token, err = invalidate(profile, token.AccessToken); err != nil {
		return nil, err
	}
	return get(url, token)
}

func get(url string, token Token) (*http.Response, error) {
	request, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return nil, err
	}
	request.Header.Set("Authorization", "Bearer "+token.AccessToken)
	return http.DefaultClient.Do(request)
}

func main() {
	profile, mode, target := os.Args[1], os.Args[2], os.Args[3]
	var answer *http.Response
	var err error
	if mode == "proxy" {
		answer, err = tokend.Get("http://tokend/v1/proxy/" + profile + target)
	} else {
		answer, err = callAPI(profile, target)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer answer.Body.Close()
	body, _ := io.ReadAll(answer.Body)
	if answer.StatusCode != http.StatusOK {
		fmt.Fprintf(os.Stderr, "HTTP %d: %s\n", answer.StatusCode, body)
		os.Exit(1)
	}
	fmt.Println(string(body))
}
