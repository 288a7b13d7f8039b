package sink

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/pipemesh/pipemesh/protocol"
)

// handleInitProducerID hands out increasing producer ids at epoch 0, so
// that idempotent producers (kgo's default) work. Sequence numbers are
// not checked. Transactional producers are refused: the sink has no
// transaction coordinator.
func (c *conn) handleInitProducerID(h protocol.RequestHeader, body []byte) (kmsg.Response, error) {
	req := kmsg.NewPtrInitProducerIDRequest()
	if err := decode(req, h, body); err != nil {
		return nil, err
	}
	resp := req.ResponseKind().(*kmsg.InitProducerIDResponse)
	if req.TransactionalID != nil {
		c.s.log.Warn("sink refused a transactional producer: transactions are not supported", "transactional_id", *req.TransactionalID, "client_id", c.clientID)
		resp.ErrorCode = kerr.InvalidRequest.Code
		resp.ProducerID, resp.ProducerEpoch = -1, -1
		return resp, nil
	}
	resp.ProducerID, resp.ProducerEpoch = c.s.nextPID.Add(1), 0
	return resp, nil
}
