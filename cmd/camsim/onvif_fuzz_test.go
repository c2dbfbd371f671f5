package main

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"testing"
)

// FuzzParseProbe feeds hostile WS-Discovery packets to the probe parser: it
// must return an answer or an error, never panic, and never accept a DTD.
func FuzzParseProbe(f *testing.F) {
	f.Add([]byte(`<?xml version="1.0"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"><s:Header><a:MessageID>uuid:1</a:MessageID></s:Header><s:Body><Probe xmlns="http://schemas.xmlsoap.org/ws/2005/04/discovery"><d:Types xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">dn:NetworkVideoTransmitter</d:Types></Probe></s:Body></s:Envelope>`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseProbe(b)
		if err == nil && bytes.Contains(b, []byte("<!DOCTYPE")) {
			t.Fatalf("accepted a DTD: %+v", p)
		}
	})
}

// FuzzSOAPRequest feeds hostile SOAP requests to a device's handler.
func FuzzSOAPRequest(f *testing.F) {
	f.Add([]byte(`<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/></s:Body></s:Envelope>`))
	set, err := newOnvifSet(1, "admin", "pw", nil, "", 0, slog.New(slog.DiscardHandler))
	if err != nil {
		f.Fatal(err)
	}
	set.rtspAddr = func() string { return "127.0.0.1:554" }
	h := set.devices[0].handler()
	f.Fuzz(func(t *testing.T, b []byte) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/onvif/device_service", bytes.NewReader(b)))
		if rec.Code == 200 && bytes.Contains(b, []byte("<!DOCTYPE")) {
			t.Fatal("accepted a DTD")
		}
	})
}
