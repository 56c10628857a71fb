/* The emulated NCCL (include/nccl.h): MPI collectives over MPI_COMM_WORLD on the ranks' host memory.
 * The ranks must be the MPI job's, in the same order (as train/comm_nccl.c makes them); a group's
 * calls run one by one as they are made, which is what NCCL's group semantics allow when every rank
 * makes the same calls in the same order. Counts past INT_MAX are refused (the tests' buffers are
 * small). */
#include <limits.h>
#define OMPI_SKIP_MPICXX 1 /* the C API only: the C++ bindings do not build warning-free */
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#include <string.h>

#include "nccl.h"

struct emu_nccl_comm {
    int rank, size;
};

static MPI_Datatype mpi_type(ncclDataType_t t) { return t == ncclFloat64 ? MPI_DOUBLE : MPI_FLOAT; }
static size_t type_bytes(ncclDataType_t t) { return t == ncclFloat64 ? 8 : 4; }

extern "C" ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    memset(id, 0, sizeof *id);
    memcpy(id->internal, "cuda_emu nccl", 13);
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    int r, n;
    if (memcmp(id.internal, "cuda_emu nccl", 13) != 0) return ncclInvalidArgument; /* not rank 0's id */
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    if (r != rank || n != nranks) return ncclInvalidUsage;
    *comm = new emu_nccl_comm{rank, nranks};
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    delete comm;
    return ncclSuccess;
}

extern "C" ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

extern "C" ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t *async_error) {
    *async_error = ncclSuccess;
    return ncclSuccess;
}

extern "C" const char *ncclGetErrorString(ncclResult_t r) { return r == ncclSuccess ? "no error" : "emulated NCCL error"; }
extern "C" ncclResult_t ncclGroupStart(void) { return ncclSuccess; }
extern "C" ncclResult_t ncclGroupEnd(void) { return ncclSuccess; }

extern "C" ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t,
                                      ncclComm_t, cudaStream_t) {
    if (count > INT_MAX) return ncclInvalidArgument;
    const void *s = send == recv ? MPI_IN_PLACE : send;
    return MPI_Allreduce(s, recv, (int)count, mpi_type(type), MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS ? ncclSuccess
                                                                                                       : ncclSystemError;
}

extern "C" ncclResult_t ncclReduce(const void *send, void *recv, size_t count, ncclDataType_t type, ncclRedOp_t,
                                   int root, ncclComm_t comm, cudaStream_t) {
    if (count > INT_MAX) return ncclInvalidArgument;
    const void *s = comm->rank == root && send == recv ? MPI_IN_PLACE : send;
    return MPI_Reduce(s, recv, (int)count, mpi_type(type), MPI_SUM, root, MPI_COMM_WORLD) == MPI_SUCCESS
               ? ncclSuccess
               : ncclSystemError;
}

extern "C" ncclResult_t ncclBroadcast(const void *send, void *recv, size_t count, ncclDataType_t type, int root,
                                      ncclComm_t comm, cudaStream_t) {
    if (count > INT_MAX) return ncclInvalidArgument;
    if (comm->rank == root && send != recv) memcpy(recv, send, count * type_bytes(type));
    return MPI_Bcast(recv, (int)count, mpi_type(type), root, MPI_COMM_WORLD) == MPI_SUCCESS ? ncclSuccess
                                                                                            : ncclSystemError;
}
