/* HTTP/1 server connections (placeholder: bodies are never streamed yet). */
#include "http.h"

bool vg_http_body_is_streamed(h2o_req_t *req)
{
    (void)req;
    return false;
}

size_t vg_http_body_length(h2o_req_t *req)
{
    (void)req;
    return SIZE_MAX;
}

void vg_http_body_read(h2o_req_t *req, size_t limit, vg_http_body_cb cb, void *data)
{
    (void)req;
    (void)limit;
    cb(data, h2o_iovec_init(NULL, 0), VG_HTTP_BODY_ERROR, 0, "request body is not streamed");
}
