package cdc

// Table is what the live catalog says about a mapped table at start-up.
// Mapping validation checks mappings against it before streaming starts.
type Table struct {
	// OID is the table's pg_class OID, which is also the relation ID
	// pgoutput announces it under, whatever its name.
	OID     uint32
	Name    TableName
	Columns []TableColumn // in attnum order, dropped columns excluded
	// PrimaryKey lists the primary key columns in index order; empty when
	// the table has none.
	PrimaryKey []string
	// ReplicaIdentity is pg_class.relreplident: 'd', 'n', 'f' or 'i'.
	ReplicaIdentity byte
	// IdentityColumns are the columns an UPDATE or DELETE carries in its
	// old tuple: the primary key for 'd', the index columns for 'i', every
	// column for 'f', none for 'n'.
	IdentityColumns []string
	// UniqueKeys lists the column sets of valid unique indexes without
	// expressions or predicates (the primary key included).
	UniqueKeys [][]string
}

// TableColumn is one column of a Table.
type TableColumn struct {
	Name    string
	TypeOID uint32
	Type    string // format_type(atttypid, atttypmod), e.g. "character(4)"
	NotNull bool
}

// Column returns the named column, or nil.
func (t *Table) Column(name string) *TableColumn {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// Catalog maps table names to what the catalog says about them. A table
// that does not exist is absent.
type Catalog map[TableName]*Table
