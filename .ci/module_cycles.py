"""Fails when the module import graph of src/ has a cycle. Each file is a node; an edge is a
`crate::`/`super::`/`self::` path (or a child module's path) that names an item of another file.
Usage: python3 .ci/module_cycles.py [src] [-a: print every edge]"""
import os,re,sys
root=sys.argv[1] if len(sys.argv)>1 else 'src'
files={}
for d,_,fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p=os.path.join(d,f); rel=os.path.relpath(p,root)
            parts=rel[:-3].split('/')
            if parts[-1]=='mod': parts=parts[:-1]
            if parts==['lib'] or parts==['main']: parts=[]  if parts==['lib'] else None
            if parts is None: continue
            files[tuple(parts)]=rel
def strip(t):
    m=re.search(r'#\[cfg\(test\)\]\s*mod tests\s*\{',t)
    if m: t=t[:m.start()]
    t=re.sub(r'//[^\n]*','',t)
    return t
edges={}
for mod,rel in files.items():
    if rel.endswith('tests.rs'): continue
    t=strip(open(os.path.join(root,rel)).read())
    deps=set()
    # expand use groups crudely: find crate:: and super:: paths
    for m in re.finditer(r'\b(crate|super|self)((?:::\s*(?:\w+|\{))+)',t):
        base=m.group(1); rest=m.group(2)
        segs=[s.strip() for s in rest.split('::') if s.strip()]
        segs=[s for s in segs if s!='{']
        # segs may end with '{' removed
        if base=='crate': start=[]
        elif base=='super':
            start=list(mod[:-1]) if not rel.endswith('mod.rs') else list(mod[:-1])
            # file foo.rs in dir: super = parent module
            start=list(mod[:-1])
            while segs and segs[0]=='super': segs.pop(0); start=start[:-1]
        else: start=list(mod)
        path=start+[s for s in segs if re.match(r'^\w+$',s)]
        # longest prefix that is a file
        best=None
        for i in range(len(path),-1,-1):
            if tuple(path[:i]) in files: best=tuple(path[:i]); break
        # if a brace group follows the path, the items may be modules
        if best is not None and best!=mod: deps.add(best)
    # brace groups: crate::a::{b, c::d}
    for m in re.finditer(r'\b(crate|super)((?:::\w+)*)::\{([^;]*?)\};',t,re.S):
        base=m.group(1); pre=[s for s in m.group(2).split('::') if s]
        start=[] if base=='crate' else list(mod[:-1])
        for item in re.split(r',',m.group(3)):
            item=item.strip()
            if not item: continue
            segs=start+pre+[s for s in re.split(r'::',item.split(' as ')[0]) if re.match(r'^\w+$',s.strip())]
            for i in range(len(segs),-1,-1):
                if tuple(segs[:i]) in files:
                    if tuple(segs[:i])!=mod: deps.add(tuple(segs[:i]))
                    break
    for f in files:
        if len(f)==len(mod)+1 and f[:len(mod)]==mod:
            if re.search(r'(?<![:\w])'+f[-1]+r'::',t): deps.add(f)
    deps.discard(())  # lib.rs
    edges[mod]=deps
# cycles via tarjan
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        if len(comp)>1:sccs.append(comp)
for v in edges:
    if v not in idx: sc(v)
for comp in sccs:
    print(len(comp),'files in cycle:')
    s=set(comp)
    for v in sorted(comp):
        print('  ','/'.join(v),'->',sorted('/'.join(w) for w in edges[v] if w in s))
if '-a' in sys.argv:
    for v in sorted(edges): print('/'.join(v),'->',sorted('/'.join(w) for w in edges[v]))

if sccs:
    print('module cycles found: import from the defining file, one layer down')
    sys.exit(1)
print('no module cycle in', len(edges), 'files')
