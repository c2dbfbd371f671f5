package evidence

import (
	"bytes"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Bounds on what the MP4 walker accepts from an export.
const (
	maxInit     = 1 << 20 // ftyp + moov
	maxMoof     = 4 << 20 // one moof
	maxMeta     = 1 << 20 // the trailing ONVIF meta box
	maxMdat     = 1 << 30 // one fragment's media data
	maxBoxDepth = 8
)

// boxHeader is an ISO BMFF box header.
type boxHeader struct {
	typ  string
	size int64 // whole box, header included
	hdr  int   // header length: 8, or 16 with a 64-bit size
}

// readBoxHeader reads a box header from r. A box of size 0 ("to the end of the file") is refused: an
// evidence file names every size.
func readBoxHeader(r io.Reader) (boxHeader, error) {
	var b [16]byte
	if _, err := io.ReadFull(r, b[:8]); err != nil {
		return boxHeader{}, err
	}
	h := boxHeader{typ: string(b[4:8]), size: int64(binary.BigEndian.Uint32(b[:4])), hdr: 8}
	if h.size == 1 {
		if _, err := io.ReadFull(r, b[8:16]); err != nil {
			return boxHeader{}, fmt.Errorf("%w: box %q: truncated 64-bit size", ErrFormat, h.typ)
		}
		u := binary.BigEndian.Uint64(b[8:16])
		if u > 1<<50 {
			return boxHeader{}, fmt.Errorf("%w: box %q of %d bytes", ErrFormat, h.typ, u)
		}
		h.size, h.hdr = int64(u), 16
	}
	if h.size < int64(h.hdr) {
		return boxHeader{}, fmt.Errorf("%w: box %q has size %d", ErrFormat, printable(h.typ), h.size)
	}
	return h, nil
}

func printable(s string) string {
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return fmt.Sprintf("%x", s)
		}
	}
	return s
}

// box is a box read into memory: its type, and its payload (after the header).
type box struct {
	typ     string
	payload []byte
	off     int // offset of the box in the parent's byte slice
}

// parseBoxes splits b into consecutive boxes, each within b.
func parseBoxes(b []byte) ([]box, error) {
	var out []box
	off := 0
	for off < len(b) {
		h, err := readBoxHeader(bytes.NewReader(b[off:]))
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, fmt.Errorf("%w: truncated box header at offset %d", ErrFormat, off)
			}
			return nil, err
		}
		if h.size > int64(len(b)-off) {
			return nil, fmt.Errorf("%w: box %q of %d bytes overruns its container (%d left)", ErrFormat, printable(h.typ), h.size, len(b)-off)
		}
		out = append(out, box{typ: h.typ, payload: b[off+h.hdr : off+int(h.size)], off: off})
		off += int(h.size)
	}
	return out, nil
}

func child(boxes []box, typ string) (box, bool) {
	for _, b := range boxes {
		if b.typ == typ {
			return b, true
		}
	}
	return box{}, false
}

func appendBox(dst []byte, typ string, payload ...[]byte) []byte {
	n := 8
	for _, p := range payload {
		n += len(p)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = append(dst, typ...)
	for _, p := range payload {
		dst = append(dst, p...)
	}
	return dst
}

func fullBoxHeader(version byte, flags uint32) []byte {
	return []byte{version, byte(flags >> 16), byte(flags >> 8), byte(flags)}
}

// initInfo is what the export needs of a recorded init segment.
type initInfo struct {
	ftyp    []byte // the whole ftyp box
	moov    []box  // moov's children
	stsd    []byte // the video track's whole stsd box, byte for byte
	trackID uint32
	// trex defaults, used when a fragment names none
	defDuration uint32
}

// parseInit reads a recorded init segment: ftyp then moov with one video track.
func parseInit(b []byte) (initInfo, error) {
	var in initInfo
	if len(b) > maxInit {
		return in, fmt.Errorf("%w: init segment of %d bytes", ErrFormat, len(b))
	}
	top, err := parseBoxes(b)
	if err != nil {
		return in, fmt.Errorf("init segment: %w", err)
	}
	if len(top) != 2 || top[0].typ != "ftyp" || top[1].typ != "moov" {
		return in, fmt.Errorf("%w: init segment is not ftyp+moov", ErrFormat)
	}
	in.ftyp = b[top[0].off:top[1].off]
	if in.moov, err = parseBoxes(top[1].payload); err != nil {
		return in, fmt.Errorf("init segment moov: %w", err)
	}
	var traks int
	for _, c := range in.moov {
		if c.typ != "trak" {
			continue
		}
		traks++
		kids, err := parseBoxes(c.payload)
		if err != nil {
			return in, fmt.Errorf("init segment trak: %w", err)
		}
		tkhd, ok := child(kids, "tkhd")
		if !ok || len(tkhd.payload) < 16 {
			return in, fmt.Errorf("%w: trak without a tkhd", ErrFormat)
		}
		if tkhd.payload[0] == 1 {
			if len(tkhd.payload) < 24 {
				return in, fmt.Errorf("%w: short tkhd", ErrFormat)
			}
			in.trackID = binary.BigEndian.Uint32(tkhd.payload[20:24])
		} else {
			in.trackID = binary.BigEndian.Uint32(tkhd.payload[12:16])
		}
		stsd, err := findPath(c.payload, "mdia", "minf", "stbl", "stsd")
		if err != nil {
			return in, fmt.Errorf("init segment: %w", err)
		}
		in.stsd = stsd
	}
	if traks != 1 {
		return in, fmt.Errorf("%w: init segment has %d tracks, want 1", ErrFormat, traks)
	}
	if mvex, ok := child(in.moov, "mvex"); ok {
		kids, err := parseBoxes(mvex.payload)
		if err != nil {
			return in, fmt.Errorf("init segment mvex: %w", err)
		}
		if trex, ok := child(kids, "trex"); ok && len(trex.payload) >= 16 {
			in.defDuration = binary.BigEndian.Uint32(trex.payload[12:16])
		}
	}
	return in, nil
}

// findPath returns the whole box (header included) at a path of container boxes below payload.
func findPath(payload []byte, path ...string) ([]byte, error) {
	cur := payload
	for i, p := range path {
		kids, err := parseBoxes(cur)
		if err != nil {
			return nil, err
		}
		c, ok := child(kids, p)
		if !ok {
			return nil, fmt.Errorf("%w: no %s box", ErrFormat, p)
		}
		if i == len(path)-1 {
			return cur[c.off : c.off+boxLen(cur[c.off:])], nil
		}
		cur = c.payload
	}
	return nil, fmt.Errorf("%w: empty path", ErrFormat)
}

// boxLen returns the size of the (already validated) box at the start of b.
func boxLen(b []byte) int {
	s := int(binary.BigEndian.Uint32(b[:4]))
	if s == 1 {
		s = int(binary.BigEndian.Uint64(b[8:16]))
	}
	return s
}

// exportInit builds the export's ftyp+moov from a recorded init: the same boxes, byte for byte, except an
// edit list inserted in the track so that presentation starts at the first exported fragment
// (mediaStart, on the recording's absolute 90 kHz timeline) instead of at the Unix epoch.
func exportInit(in initInfo, mediaStart int64) []byte {
	elst := fullBoxHeader(1, 0)
	elst = binary.BigEndian.AppendUint32(elst, 1)                  // entry_count
	elst = binary.BigEndian.AppendUint64(elst, 0)                  // segment_duration: 0, the whole (fragmented) media
	elst = binary.BigEndian.AppendUint64(elst, uint64(mediaStart)) // media_time
	elst = append(elst, 0, 1, 0, 0)                                // media_rate 1.0
	edts := appendBox(nil, "edts", appendBox(nil, "elst", elst))

	var moov []byte
	for _, c := range in.moov {
		if c.typ != "trak" {
			moov = appendBox(moov, c.typ, c.payload)
			continue
		}
		kids, _ := parseBoxes(c.payload) // parsed by parseInit already
		var trak []byte
		for _, k := range kids {
			if k.typ == "edts" {
				continue // replaced
			}
			trak = appendBox(trak, k.typ, k.payload)
			if k.typ == "tkhd" {
				trak = append(trak, edts...)
			}
		}
		moov = appendBox(moov, "trak", trak)
	}
	out := append([]byte(nil), in.ftyp...)
	return appendBox(out, "moov", moov)
}

// fragmentInfo is the timing of one recorded fragment (moof).
type fragmentInfo struct {
	seq      uint32
	track    uint32
	base     int64 // tfdt, on the absolute 90 kHz timeline
	duration int64
	samples  uint32
}

// parseMoof reads a moof's payload: one traf with tfhd, tfdt and trun.
func parseMoof(payload []byte, defDuration uint32) (fragmentInfo, error) {
	var f fragmentInfo
	kids, err := parseBoxes(payload)
	if err != nil {
		return f, fmt.Errorf("moof: %w", err)
	}
	mfhd, ok := child(kids, "mfhd")
	if !ok || len(mfhd.payload) != 8 {
		return f, fmt.Errorf("%w: moof without a valid mfhd", ErrFormat)
	}
	f.seq = binary.BigEndian.Uint32(mfhd.payload[4:8])
	var trafs int
	for _, k := range kids {
		if k.typ == "traf" {
			trafs++
		}
	}
	if trafs != 1 {
		return f, fmt.Errorf("%w: moof with %d track fragments, want 1", ErrFormat, trafs)
	}
	traf, _ := child(kids, "traf")
	tk, err := parseBoxes(traf.payload)
	if err != nil {
		return f, fmt.Errorf("traf: %w", err)
	}
	tfhd, ok := child(tk, "tfhd")
	if !ok || len(tfhd.payload) < 8 {
		return f, fmt.Errorf("%w: traf without a valid tfhd", ErrFormat)
	}
	flags := binary.BigEndian.Uint32(tfhd.payload[0:4]) & 0xffffff
	f.track = binary.BigEndian.Uint32(tfhd.payload[4:8])
	p := tfhd.payload[8:]
	skip := func(n int) bool {
		if len(p) < n {
			return false
		}
		p = p[n:]
		return true
	}
	def := defDuration
	ok = true
	if flags&0x1 != 0 {
		ok = ok && skip(8)
	}
	if flags&0x2 != 0 {
		ok = ok && skip(4)
	}
	if flags&0x8 != 0 {
		if ok = ok && len(p) >= 4; ok {
			def = binary.BigEndian.Uint32(p)
			p = p[4:]
		}
	}
	if !ok {
		return f, fmt.Errorf("%w: short tfhd", ErrFormat)
	}
	tfdt, ok := child(tk, "tfdt")
	switch {
	case !ok || len(tfdt.payload) < 8:
		return f, fmt.Errorf("%w: traf without a tfdt", ErrFormat)
	case tfdt.payload[0] == 1 && len(tfdt.payload) == 12:
		f.base = int64(binary.BigEndian.Uint64(tfdt.payload[4:12]))
	case tfdt.payload[0] == 0 && len(tfdt.payload) == 8:
		f.base = int64(binary.BigEndian.Uint32(tfdt.payload[4:8]))
	default:
		return f, fmt.Errorf("%w: tfdt version %d of %d bytes", ErrFormat, tfdt.payload[0], len(tfdt.payload))
	}
	if f.base < 0 {
		return f, fmt.Errorf("%w: decode time out of range", ErrFormat)
	}
	for _, k := range tk {
		if k.typ != "trun" {
			continue
		}
		d, n, err := trunDuration(k.payload, def)
		if err != nil {
			return f, err
		}
		f.duration += d
		f.samples += n
	}
	return f, nil
}

// trunDuration sums a trun's sample durations.
func trunDuration(b []byte, def uint32) (int64, uint32, error) {
	if len(b) < 8 {
		return 0, 0, fmt.Errorf("%w: short trun", ErrFormat)
	}
	flags := binary.BigEndian.Uint32(b[0:4]) & 0xffffff
	count := binary.BigEndian.Uint32(b[4:8])
	p := b[8:]
	if flags&0x1 != 0 {
		p = p[min(4, len(p)):]
	}
	if flags&0x4 != 0 {
		p = p[min(4, len(p)):]
	}
	per := 0
	for _, bit := range []uint32{0x100, 0x200, 0x400, 0x800} {
		if flags&bit != 0 {
			per += 4
		}
	}
	if per > 0 && uint64(count)*uint64(per) > uint64(len(p)) || per == 0 && count > 1<<20 {
		return 0, 0, fmt.Errorf("%w: trun of %d samples in %d bytes", ErrFormat, count, len(p))
	}
	var total int64
	for i := range int(count) {
		d := def
		if flags&0x100 != 0 {
			d = binary.BigEndian.Uint32(p[i*per:])
		}
		total += int64(d)
	}
	return total, count, nil
}

// ONVIF Export File Format constants.
const (
	schemeOEFF     = 0x6F656666 // "oeff"
	schemeVersion1 = 0x00010000
	epoch1904      = -2082844800 // Unix seconds of 1904-01-01, the ISO BMFF time origin
)

var (
	oidRSAPSS = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidMGF1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
)

type algorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

type pssParameters struct {
	Hash       algorithmIdentifier `asn1:"explicit,tag:0"`
	MGF        algorithmIdentifier `asn1:"explicit,tag:1"`
	SaltLength int                 `asn1:"explicit,tag:2"`
}

// pssAlgorithmID is the DER AlgorithmIdentifier of RSASSA-PSS with SHA-256, MGF1-SHA-256 and the given
// salt length (RFC 4055), carried in the sigC box because the TPM's salt length (the hash length) is not
// the format's default of 20.
func pssAlgorithmID(salt int) []byte {
	null := asn1.RawValue{Tag: asn1.TagNull}
	sha := algorithmIdentifier{Algorithm: oidSHA256, Parameters: null}
	shaDER, _ := asn1.Marshal(sha)
	params, _ := asn1.Marshal(pssParameters{
		Hash:       sha,
		MGF:        algorithmIdentifier{Algorithm: oidMGF1, Parameters: asn1.RawValue{FullBytes: shaDER}},
		SaltLength: salt,
	})
	der, _ := asn1.Marshal(algorithmIdentifier{Algorithm: oidRSAPSS, Parameters: asn1.RawValue{FullBytes: params}})
	return der
}

// onvifInfo is what the ONVIF meta box says about an export.
type onvifInfo struct {
	UnitName, UnitURL string
	ExportTime        time.Time
	Operator          string
	TrackID           uint32
	SourceName        string
	SourceURL         string
	Start             time.Time // absolute time of presentation time zero
	Cert              []byte    // DER
	SigLen            int
	SaltLen           int
}

func cstring(s string) []byte { return append([]byte(s), 0) }

// onvifMeta builds the trailing file-level meta box: hdlr, suep (export information) and ipro/sinf with
// cstb (start time), schm ("oeff" v1) and schi holding sibo (the signature), cert and sigC. It returns the
// box and the offset of the signature bytes within it. sig must be SigLen bytes (zeros to compute the
// signed hash).
func onvifMeta(in onvifInfo, sig []byte) ([]byte, int) {
	hdlr := fullBoxHeader(0, 0)
	hdlr = append(hdlr, 0, 0, 0, 0)
	hdlr = append(hdlr, "null"...)
	hdlr = append(hdlr, make([]byte, 12)...)
	hdlr = append(hdlr, cstring("ONVIF export")...)

	suep := fullBoxHeader(1, 0)
	suep = append(suep, cstring(in.UnitName)...)
	suep = append(suep, cstring(in.UnitURL)...)
	suep = append(suep, cstring("")...) // ExportUnitMAC
	suep = binary.BigEndian.AppendUint64(suep, uint64(in.ExportTime.Unix()-epoch1904))
	suep = append(suep, cstring(in.Operator)...)
	suep = binary.BigEndian.AppendUint32(suep, 1)
	suep = binary.BigEndian.AppendUint16(suep, uint16(in.TrackID))
	suep = append(suep, cstring(in.SourceName)...)
	suep = append(suep, cstring(in.SourceURL)...)
	suep = append(suep, cstring("")...) // SourceMAC
	suep = append(suep, cstring("")...) // SourceLine

	cstb := binary.BigEndian.AppendUint32(nil, 1)
	cstb = binary.BigEndian.AppendUint32(cstb, in.TrackID)
	cstb = binary.BigEndian.AppendUint64(cstb, uint64(filetime(in.Start)))

	schm := fullBoxHeader(0, 0)
	schm = binary.BigEndian.AppendUint32(schm, schemeOEFF)
	schm = binary.BigEndian.AppendUint32(schm, schemeVersion1)

	schi := appendBox(nil, "sibo", sig)
	schi = appendBox(schi, "cert", in.Cert)
	schi = appendBox(schi, "sigC", pssAlgorithmID(in.SaltLen))
	sinf := appendBox(nil, "cstb", cstb)
	sinf = appendBox(sinf, "schm", schm)
	sinf = appendBox(sinf, "schi", schi)
	ipro := append(fullBoxHeader(0, 0), 0, 1) // protection_count 1
	ipro = appendBox(ipro, "sinf", sinf)

	body := fullBoxHeader(0, 0)
	body = appendBox(body, "hdlr", hdlr)
	body = appendBox(body, "suep", suep)
	body = appendBox(body, "ipro", ipro)
	meta := appendBox(nil, "meta", body)
	// sibo's payload sits at the end of: meta hdr, full box hdr, hdlr, suep, ipro hdr+fullbox+count, sinf
	// hdr, cstb, schm, schi hdr, sibo hdr.
	off := 8 + 4 + 8 + len(hdlr) + 8 + len(suep) + 8 + 6 + 8 + 8 + len(cstb) + 8 + len(schm) + 8 + 8
	return meta, off
}

// filetime converts t to 100 ns intervals since 1601-01-01 UTC.
func filetime(t time.Time) int64 {
	const unixTo1601 = 11644473600 // seconds from 1601-01-01 to 1970-01-01
	return (t.Unix()+unixTo1601)*10_000_000 + int64(t.Nanosecond())/100
}

func fromFiletime(ft int64) time.Time {
	const unixTo1601 = 11644473600
	return time.Unix(ft/10_000_000-unixTo1601, (ft%10_000_000)*100).UTC()
}

// onvifSeal is what the verifier reads back from a meta box.
type onvifSeal struct {
	info      onvifInfo
	sig       []byte
	sigOff    int // offset of the signature bytes in the meta box
	algorithm []byte
}

// parseOnvifMeta reads a whole meta box (header included) as onvifMeta writes it, in any box order.
func parseOnvifMeta(b []byte) (onvifSeal, error) {
	var s onvifSeal
	if len(b) > maxMeta {
		return s, fmt.Errorf("%w: meta box of %d bytes", ErrFormat, len(b))
	}
	top, err := parseBoxes(b)
	if err != nil || len(top) != 1 || top[0].typ != "meta" || len(top[0].payload) < 4 {
		return s, fmt.Errorf("%w: not one meta box (%v)", ErrFormat, err)
	}
	if boxLen(b) != len(b) || b[0] == 0 && b[1] == 0 && b[2] == 0 && b[3] == 1 {
		return s, fmt.Errorf("%w: meta box with a 64-bit size", ErrFormat)
	}
	kids, err := parseBoxes(top[0].payload[4:])
	if err != nil {
		return s, fmt.Errorf("meta: %w", err)
	}
	suep, ok := child(kids, "suep")
	if !ok {
		return s, fmt.Errorf("%w: meta without suep", ErrFormat)
	}
	if err := parseSuep(suep.payload, &s.info); err != nil {
		return s, err
	}
	ipro, ok := child(kids, "ipro")
	if !ok || len(ipro.payload) < 6 {
		return s, fmt.Errorf("%w: meta without ipro", ErrFormat)
	}
	iproKids, err := parseBoxes(ipro.payload[6:])
	if err != nil {
		return s, fmt.Errorf("ipro: %w", err)
	}
	var sinfs int
	for _, k := range iproKids {
		if k.typ == "sinf" {
			sinfs++
		}
	}
	if sinfs != 1 {
		return s, fmt.Errorf("%w: %d signing instances, want exactly 1", ErrFormat, sinfs)
	}
	sinf, _ := child(iproKids, "sinf")
	sk, err := parseBoxes(sinf.payload)
	if err != nil {
		return s, fmt.Errorf("sinf: %w", err)
	}
	schm, ok := child(sk, "schm")
	if !ok || len(schm.payload) < 12 || binary.BigEndian.Uint32(schm.payload[4:8]) != schemeOEFF {
		return s, fmt.Errorf("%w: protection scheme is not oeff", ErrFormat)
	}
	if cstb, ok := child(sk, "cstb"); ok {
		if len(cstb.payload) < 16 || binary.BigEndian.Uint32(cstb.payload[:4]) < 1 {
			return s, fmt.Errorf("%w: short cstb", ErrFormat)
		}
		s.info.Start = fromFiletime(int64(binary.BigEndian.Uint64(cstb.payload[8:16]) & (1<<62 - 1)))
	}
	schi, ok := child(sk, "schi")
	if !ok {
		return s, fmt.Errorf("%w: sinf without schi", ErrFormat)
	}
	ck, err := parseBoxes(schi.payload)
	if err != nil {
		return s, fmt.Errorf("schi: %w", err)
	}
	sibo, ok := child(ck, "sibo")
	if !ok || len(sibo.payload) == 0 {
		return s, fmt.Errorf("%w: no signature box", ErrFormat)
	}
	cert, ok := child(ck, "cert")
	if !ok {
		return s, fmt.Errorf("%w: no certificate box", ErrFormat)
	}
	if sigC, ok := child(ck, "sigC"); ok {
		s.algorithm = sigC.payload
	}
	s.sig = sibo.payload
	s.info.Cert = cert.payload
	// The signature's offset in b: every container's payload is a sub-slice of b.
	s.sigOff = offsetIn(b, sibo.payload)
	return s, nil
}

// offsetIn returns the offset of sub within b; sub must be a sub-slice of b reaching to b's capacity
// end, as every payload parseBoxes returns is.
func offsetIn(b, sub []byte) int { return cap(b) - cap(sub) }

func parseSuep(p []byte, in *onvifInfo) error {
	if len(p) < 4 {
		return fmt.Errorf("%w: short suep", ErrFormat)
	}
	p = p[4:]
	str := func() (string, bool) {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return "", false
		}
		s := string(p[:i])
		p = p[i+1:]
		return s, true
	}
	var ok1, ok2, ok3, ok4 bool
	in.UnitName, ok1 = str()
	in.UnitURL, ok2 = str()
	_, ok3 = str()
	if !ok1 || !ok2 || !ok3 || len(p) < 8 {
		return fmt.Errorf("%w: truncated suep", ErrFormat)
	}
	in.ExportTime = time.Unix(int64(binary.BigEndian.Uint64(p)&(1<<40-1))+epoch1904, 0).UTC()
	p = p[8:]
	in.Operator, ok4 = str()
	if !ok4 || len(p) < 4 {
		return fmt.Errorf("%w: truncated suep", ErrFormat)
	}
	if n := binary.BigEndian.Uint32(p); n >= 1 {
		p = p[4:]
		if len(p) < 2 {
			return fmt.Errorf("%w: truncated suep track", ErrFormat)
		}
		in.TrackID = uint32(binary.BigEndian.Uint16(p))
		p = p[2:]
		var ok bool
		if in.SourceName, ok = str(); !ok {
			return fmt.Errorf("%w: truncated suep track", ErrFormat)
		}
		if in.SourceURL, ok = str(); !ok {
			return fmt.Errorf("%w: truncated suep track", ErrFormat)
		}
	}
	return nil
}
