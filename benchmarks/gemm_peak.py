"""fp32 GEMM throughput of the candidates rnnkit._backend.gemm_nt chooses from (torch's BLAS,
oneDNN through torch, the core's packed GEMM), with a the plain rows and transposed (the
weight-gradient form), timed by the calling thread's CPU time.

    .venv/bin/python benchmarks/gemm_peak.py [threads]     # default 1
"""
import torch, time, sys
from rnnkit import _backend
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv)>1 else 1)
def bench(f, n=7):
    f(); ts=[]
    for _ in range(n):
        t=time.thread_time(); f(); ts.append(time.thread_time()-t)
    return min(ts)
for (M,N,K) in [(2048,1024,1024),(1600,1024,256),(1024,256,1600)]:
    a=torch.randn(M,K); w=torch.randn(N,K); b=torch.randn(N)
    fl=2*M*N*K
    ref=(a.double()@w.double().t()+b.double())
    for name,f in [("torch",_backend._torch_nt),("onednn",_backend._onednn_nt),("core",_backend.matmul_nt)]:
        r=f(a,w,b); err=(r.double()-ref).abs().max().item()
        t=bench(lambda: f(a,w,b))
        print(M,N,K,name, round(fl/t/1e9,1), "GF/s err", err, flush=True)
    # transposed A (weight-gradient form)
    at=torch.randn(K,M).t()
    for name,f in [("torch",_backend._torch_nt),("onednn",_backend._onednn_nt),("core",_backend.matmul_nt)]:
        t=bench(lambda: f(at,w,None))
        print(M,N,K,"A^T",name, round(fl/t/1e9,1), flush=True)
