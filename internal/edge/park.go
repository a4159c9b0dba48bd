package edge

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// A held poll that waits inside its handler keeps net/http's connection
// goroutine, the goroutine's stack and the connection's read and write
// buffers for the whole hold: about 49 KiB on this code. So the edge takes
// the connection over instead (http.Hijacker) and parks it. A parked poll
// costs its heldPoll, its subscription and the bare connection. The
// goroutine that decides the poll writes its response. The connection then
// goes back to an http.Server of the edge, which serves the client's next
// requests on it as on any kept-alive connection.
//
// NOTE: nothing reads a parked connection. A client that goes away is
// noticed when its poll wakes, by a peek at the socket (peerClosed), and
// its poll counts as held until then.

// errParked is returned by a handler whose connection was taken over. The
// response is written later, by the held poll.
var errParked = errors.New("connection parked for a held poll")

// answerWriteTimeout bounds writing a parked poll's response.
const answerWriteTimeout = 10 * time.Second

// parkedConn is the connection of a parked poll.
type parkedConn struct {
	conn net.Conn
	// ahead contains the bytes the client sent after the token request,
	// such as a pipelined request.
	ahead []byte
	// header is the response header as the middleware left it when the
	// poll was parked.
	header http.Header
	// close is true when the client requested that the connection close
	// after this response.
	close bool
	log   zerolog.Logger
	start time.Time
}

// park takes the connection of r over for a held poll. It reports false,
// and leaves the request to wait in its handler, when the connection cannot
// be taken over: HTTP/2, HTTP/1.0, a request body not read to its end, or a
// writer that does not support it.
func (e *Edge) park(w http.ResponseWriter, r *http.Request, log zerolog.Logger) (parkedConn, bool) {
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 {
		return parkedConn{}, false
	}
	var probe [1]byte
	if n, err := r.Body.Read(probe[:]); n != 0 || err != io.EOF {
		return parkedConn{}, false
	}
	header := w.Header().Clone()
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return parkedConn{}, false
	}
	pc := parkedConn{conn: conn, header: header, close: r.Close, log: log, start: time.Now()}
	if n := rw.Reader.Buffered(); n > 0 {
		buffered, _ := rw.Reader.Peek(n)
		pc.ahead = bytes.Clone(buffered)
	}
	return pc, true
}

// answerParked writes a held poll's response on its parked connection and
// hands the connection back to the edge's resume server. It counts the poll
// by outcome, as the token handler does for the polls it responds to.
func (e *Edge) answerParked(pc parkedConn, answer tokenAnswer, hold time.Duration, err error) {
	defer func() {
		if v := recover(); v != nil {
			pc.log.Error().Interface("panic", v).Msg("answering a parked poll panicked")
			_ = pc.conn.Close()
		}
	}()

	if errors.Is(err, errClientGone) {
		e.metrics.polls.WithLabelValues(outcomeGone).Inc()
		pc.log.Debug().Dur("held", time.Since(pc.start)).Msg("held poll ended: the client closed the connection")
		_ = pc.conn.Close()
		return
	}

	resp := &bufferedResponse{header: pc.header}
	e.writePollAnswer(resp, &pc.log, answer, hold, err)
	size := resp.body.Len()

	stopping := false
	select {
	case <-e.closing:
		stopping = true
	default:
	}
	keep := !pc.close && !stopping
	resp.header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	out := http.Response{
		StatusCode:    resp.status,
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        resp.header,
		ContentLength: int64(size),
		Body:          io.NopCloser(&resp.body),
		Close:         !keep,
	}

	_ = pc.conn.SetWriteDeadline(time.Now().Add(answerWriteTimeout))
	bw := bufio.NewWriter(pc.conn)
	writeErr := out.Write(bw)
	if writeErr == nil {
		writeErr = bw.Flush()
	}

	outcome := pollOutcome(err, answer.replayed)
	if writeErr != nil {
		outcome = outcomeGone
		keep = false
	}
	e.metrics.polls.WithLabelValues(outcome).Inc()
	pc.log.Debug().Int("status", resp.status).Int("bytes", size).
		Dur("held", time.Since(pc.start)).Bool("sent", writeErr == nil).Msg("held poll answered")

	if !keep {
		closeLingering(pc.conn)
		return
	}
	_ = pc.conn.SetDeadline(time.Time{})
	if len(pc.ahead) > 0 {
		e.resumeQueue.put(&readAheadConn{Conn: pc.conn, ahead: pc.ahead})
		return
	}
	go e.resumeQueue.putWhenReadable(pc.conn)
}

// closedByClient reports whether the client closed or reset the parked
// connection.
func (pc parkedConn) closedByClient() bool { return peerClosed(pc.conn) }

// lingerDelay is how long a connection closed after a response stays open
// for reading, as net/http waits before it closes a connection the client
// may still be writing to.
const lingerDelay = 500 * time.Millisecond

// closeLingering closes conn for writing at once and fully after
// lingerDelay. Closing a socket with unread data from the client sends a
// reset, which can destroy the response before the client has read it.
func closeLingering(conn net.Conn) {
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		_ = conn.Close()
		return
	}
	_ = tcp.CloseWrite()
	time.AfterFunc(lingerDelay, func() { _ = tcp.Close() })
}

// bufferedResponse collects a response for a connection that net/http no
// longer serves.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	b.WriteHeader(http.StatusOK)
	return b.body.Write(p)
}

// readAheadConn is a connection whose first bytes were already read.
type readAheadConn struct {
	net.Conn
	ahead []byte
}

func (c *readAheadConn) Read(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// connQueue is the listener of the edge's resume server: it accepts the
// connections of parked polls after their response.
type connQueue struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	// idle are the connections that wait for the client's next request.
	mu   sync.Mutex
	idle map[net.Conn]struct{}
}

func newConnQueue() *connQueue {
	return &connQueue{conns: make(chan net.Conn, 256), done: make(chan struct{}), idle: make(map[net.Conn]struct{})}
}

// put queues conn for the resume server, or closes it once the queue is
// closed.
func (q *connQueue) put(conn net.Conn) {
	select {
	case <-q.done:
		_ = conn.Close()
		return
	default:
	}
	select {
	case q.conns <- conn:
	case <-q.done:
		_ = conn.Close()
	}
}

// putWhenReadable waits for the first byte of the client's next request
// and then queues conn. The resume server gives a new connection only
// ReadHeaderTimeout to send its request, so the idle time between two polls
// must pass here, as net/http lets it pass on its own kept-alive
// connections. The connection is closed when nothing arrives within
// idleTimeout.
func (q *connQueue) putWhenReadable(conn net.Conn) {
	q.mu.Lock()
	select {
	case <-q.done:
		q.mu.Unlock()
		_ = conn.Close()
		return
	default:
	}
	q.idle[conn] = struct{}{}
	q.mu.Unlock()

	var first [1]byte
	_ = conn.SetReadDeadline(time.Now().Add(idleTimeout))
	n, err := conn.Read(first[:])

	q.mu.Lock()
	delete(q.idle, conn)
	q.mu.Unlock()
	if n == 0 {
		_ = conn.Close()
		return
	}
	if err == nil {
		err = conn.SetReadDeadline(time.Time{})
	}
	if err != nil {
		_ = conn.Close()
		return
	}
	q.put(&readAheadConn{Conn: conn, ahead: first[:n]})
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case conn := <-q.conns:
		return conn, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and closes the connections still queued or idle.
func (q *connQueue) Close() error {
	q.once.Do(func() {
		q.mu.Lock()
		close(q.done)
		for conn := range q.idle {
			_ = conn.Close()
		}
		q.mu.Unlock()
		for {
			select {
			case conn := <-q.conns:
				_ = conn.Close()
			default:
				return
			}
		}
	})
	return nil
}

func (q *connQueue) Addr() net.Addr { return resumeAddr{} }

// resumeAddr names the resume server's listener, which has no address.
type resumeAddr struct{}

func (resumeAddr) Network() string { return "parked" }
func (resumeAddr) String() string  { return "parked polls" }
