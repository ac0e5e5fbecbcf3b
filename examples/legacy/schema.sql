-- A small legacy-style schema: cryptic names, a soft-delete flag, a char(n)
-- business code, an exact amount and a large text column.
CREATE SCHEMA legacy;

CREATE TABLE legacy.cust_mstr (
    cst_id    serial PRIMARY KEY,
    cst_cd    char(8)      NOT NULL UNIQUE,   -- business key, padded code
    cst_nm    varchar(80)  NOT NULL,
    eml_addr  varchar(120),
    cty_nm    varchar(60),
    ctry_cd   char(2),
    crd_lmt   numeric(12,2) NOT NULL DEFAULT 0,
    rec_stat  char(1)      NOT NULL DEFAULT 'A', -- A active, I inactive, D deleted
    upd_ts    timestamptz  NOT NULL DEFAULT now()
);
-- The business key (cst_cd) and the soft-delete flag (rec_stat) are not part
-- of the primary key, so deletes and key changes must carry the whole old row.
ALTER TABLE legacy.cust_mstr REPLICA IDENTITY FULL;

CREATE TABLE legacy.ord_hdr (
    ord_no    bigint PRIMARY KEY,
    cst_id    integer      NOT NULL REFERENCES legacy.cust_mstr (cst_id),
    ord_dt    date         NOT NULL,
    ord_amt   numeric(14,2) NOT NULL,
    stat_cd   char(2)      NOT NULL DEFAULT 'OP',
    itm_cnt   smallint     NOT NULL DEFAULT 1,
    tags      text[],
    ord_memo  text          -- free text, large enough to be TOASTed
);
