/* One XLA FFI handler that passes every call on to a host function set from Python (ctypes).
 *
 * A program that calls it names only this handler's target and a string attribute, so JAX can keep
 * the program in its persistent compilation cache; programs with jax's Python callbacks
 * (pure_callback, buffer_callback) carry a Python object and are never cached. Built into the
 * CARFAC kernel's library (cochlea/native.py); the Python side is cochlea/host_call.py. */
#include <stddef.h>
#include <stdint.h>

#include "xla/ffi/api/c_api.h"

/* Buffers the host function receives, arguments first: data[i] and, in meta, dtype (XLA's
 * numbering), rank and dims of each. Ranks above MAX_RANK are refused. */
#define MAX_BUFFERS 64
#define MAX_RANK 8
#define ERROR_BYTES 1024

/* call: the string attribute (not NUL-terminated); returns 0, or nonzero with a message in err. */
typedef int (*host_fn)(const char *call, int64_t call_len, int64_t n_args, int64_t n_rets,
                       void **data, const int64_t *meta, char *err, int64_t err_len);

static host_fn host;

void dal_host_call_set(host_fn fn) { host = fn; }

static XLA_FFI_Error *fail(const XLA_FFI_CallFrame *frame, XLA_FFI_Error_Code code,
                           const char *message) {
  XLA_FFI_Error_Create_Args args = {XLA_FFI_Error_Create_Args_STRUCT_SIZE, NULL, message, code};
  return frame->api->XLA_FFI_Error_Create(&args);
}

/* Copies one buffer's pointer and shape into data/meta; returns 0, or -1 when it does not fit. */
static int describe(const XLA_FFI_Buffer *b, void **data, int64_t *meta, int64_t *n_meta) {
  if (b->rank > MAX_RANK) return -1;
  *data = b->data;
  meta[(*n_meta)++] = b->dtype;
  meta[(*n_meta)++] = b->rank;
  for (int64_t d = 0; d < b->rank; d++) meta[(*n_meta)++] = b->dims[d];
  return 0;
}

XLA_FFI_Error *dal_host_call(XLA_FFI_CallFrame *frame) {
  XLA_FFI_Extension_Base *ext = frame->extension_start;
  if (ext && ext->type == XLA_FFI_Extension_Metadata) { /* XLA asks which FFI version we speak */
    XLA_FFI_Metadata *m = ((XLA_FFI_Metadata_Extension *)ext)->metadata;
    m->api_version = (XLA_FFI_Api_Version){XLA_FFI_Api_Version_STRUCT_SIZE, NULL,
                                           XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR};
    m->traits = 0;
    m->state_type_id = (XLA_FFI_TypeId){0};
    return NULL;
  }
  if (frame->stage != XLA_FFI_ExecutionStage_EXECUTE) return NULL;
  if (!host)
    return fail(frame, XLA_FFI_Error_Code_FAILED_PRECONDITION, "dal_host_call: no host function");
  if (frame->attrs.size != 1 || frame->attrs.types[0] != XLA_FFI_AttrType_STRING)
    return fail(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT,
                "dal_host_call: expected exactly one string attribute");
  const XLA_FFI_ByteSpan *call = frame->attrs.attrs[0];
  const int64_t n_args = frame->args.size, n_rets = frame->rets.size;
  if (n_args + n_rets > MAX_BUFFERS)
    return fail(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, "dal_host_call: too many buffers");
  void *data[MAX_BUFFERS];
  int64_t meta[MAX_BUFFERS * (MAX_RANK + 2)], n_meta = 0;
  for (int64_t i = 0; i < n_args + n_rets; i++) {
    const int is_arg = i < n_args;
    if (is_arg ? frame->args.types[i] != XLA_FFI_ArgType_BUFFER
               : frame->rets.types[i - n_args] != XLA_FFI_RetType_BUFFER)
      return fail(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, "dal_host_call: not a buffer");
    const XLA_FFI_Buffer *b = is_arg ? frame->args.args[i] : frame->rets.rets[i - n_args];
    if (describe(b, &data[i], meta, &n_meta))
      return fail(frame, XLA_FFI_Error_Code_INVALID_ARGUMENT, "dal_host_call: rank above 8");
  }
  char err[ERROR_BYTES] = {0};
  if (host(call->ptr, (int64_t)call->len, n_args, n_rets, data, meta, err, ERROR_BYTES))
    return fail(frame, XLA_FFI_Error_Code_INTERNAL, err[0] ? err : "dal_host_call failed");
  return NULL;
}
